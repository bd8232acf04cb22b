package enroll

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// Policy is a server's admission policy, in plain values so that any
// configuration source can fill it (the config fields root_pubkey,
// allow_all_consumers, allow_all_producers, storage_path).
type Policy struct {
	// RootPubKey is the deployment's trust anchor. Without one, NewGate
	// fails with ErrNoRoot unless DevMode is set.
	RootPubKey *trust.PublicKey
	// DevMode asks for a gate without a root key: an ephemeral root is
	// generated and consumers are admitted without a credential
	// (AllowAllConsumers is forced on, with a warning). It must be asked
	// for by name, so that a root key that failed to load never turns into
	// "admit everyone". Ignored when RootPubKey is set. Default false.
	DevMode bool
	// AllowAllConsumers admits every consumer without a credential (open
	// gate); capability requirements are then not enforced. Default false.
	AllowAllConsumers bool
	// AllowAllProducers skips the producer gate. Every admitted peer may
	// call the server's services, so a peer without a valid credential is
	// admitted only if the consumer gate is open as well; with
	// AllowAllProducers false, a peer declaring itself a producer must
	// present a valid producer credential even then. The config default is
	// true.
	AllowAllProducers bool
	// ClockSkew is the tolerance on validity periods, at most
	// MaxClockSkew; NewGate refuses a negative or larger one (a skew
	// stretches every credential's validity by as much). Zero means
	// DefaultClockSkew (60 s).
	ClockSkew time.Duration
	// NonceFile, if set, is where used one-time-token nonces are recorded so
	// that a restart does not reopen them (e.g. <storage_path>/ott-nonces).
	// Default: memory only.
	NonceFile string
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Grant is what an admitted peer receives.
type Grant struct {
	// Role the peer was admitted as.
	Role Role
	// Name is the credential's name ("" without a credential).
	Name string
	// Capabilities granted by the credential.
	Capabilities []string
	// Attributes of the credential (nil without one).
	Attributes map[string]string
	// Unrestricted is true when the peer came through an open gate:
	// capability requirements do not apply to it.
	Unrestricted bool
}

// Refusal is the error Gate.Admit returns for a peer it does not admit.
// Code and Message are what the peer is told; Reason, for the server's log
// only, says why.
type Refusal struct {
	Code    status.Code
	Message string
	Reason  error
}

// Error includes the private reason: log it, do not send it.
func (r *Refusal) Error() string {
	return fmt.Sprintf("%s: %v", r.Message, r.Reason)
}

// Unwrap returns the reason (ErrExpired, ErrEndpointMismatch, ...).
func (r *Refusal) Unwrap() error { return r.Reason }

// Status is the error to send to the peer: the code and public message.
func (r *Refusal) Status() *status.Error { return status.New(r.Code, r.Message) }

// Public messages of a refusal. They say that the peer was refused, not why.
const (
	MsgCredentialRequired = "admission refused: this server requires an enrollment credential"
	MsgCredentialRejected = "admission refused: credential not accepted"
)

// DevModeWarning is logged when a Gate runs without a root key.
const DevModeWarning = "Dev mode: allow_all_consumers=True (ephemeral root key)"

// Gate decides who is admitted. It is safe for concurrent use.
type Gate struct {
	p      Policy
	root   trust.PublicKey
	dev    bool
	nonces *NonceStore
}

// ErrNoRoot is returned by NewGate for a Policy with neither a root key nor
// DevMode.
var ErrNoRoot = errors.New("enroll: no root key: set Policy.RootPubKey, or Policy.DevMode to admit every consumer on an ephemeral root")

// MaxClockSkew is the largest Policy.ClockSkew NewGate accepts.
const MaxClockSkew = 10 * time.Minute

// NewGate returns the gate for p. It fails for a ClockSkew outside
// [0, MaxClockSkew]. Without a root key it fails with
// ErrNoRoot, unless p.DevMode asks for dev mode: then it generates an
// ephemeral root, opens the consumer gate and logs DevModeWarning on logger
// (nil: slog.Default()).
func NewGate(p Policy, logger *slog.Logger) (*Gate, error) {
	if logger == nil {
		logger = slog.Default()
	}
	switch {
	case p.ClockSkew < 0 || p.ClockSkew > MaxClockSkew:
		return nil, fmt.Errorf("enroll: clock skew %v must be between 0 and %v", p.ClockSkew, MaxClockSkew)
	case p.ClockSkew == 0:
		p.ClockSkew = DefaultClockSkew
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	g := &Gate{p: p}
	if p.RootPubKey == nil || p.RootPubKey.IsZero() {
		if !p.DevMode {
			return nil, ErrNoRoot
		}
		g.root = trust.IDOf(trust.GenerateKey())
		g.dev = true
		g.p.AllowAllConsumers = true
		logger.Warn(DevModeWarning)
	} else {
		g.root = *p.RootPubKey
	}
	var err error
	if g.nonces, err = NewNonceStore(p.NonceFile); err != nil {
		return nil, err
	}
	return g, nil
}

// Root returns the root public key credentials must be signed by.
func (g *Gate) Root() trust.PublicKey { return g.root }

// DevMode reports whether the gate runs on an ephemeral root.
func (g *Gate) DevMode() bool { return g.dev }

// Policy returns the effective policy (after dev-mode adjustment).
func (g *Gate) Policy() Policy { return g.p }

// Admit decides on a peer whose handshake proved endpoint id peer and that
// declared role (RoleConsumer when empty) and presented cred (nil: none). It
// returns the grant, or a *Refusal.
//
// Rules: a peer with a credential that verifies (Credential.Verify against
// the gate's root and peer, plus single use for one-time tokens) is admitted
// as the credential's role with its capabilities — or unrestricted, if the
// consumer gate is open. A peer without a valid credential is admitted,
// unrestricted, only through an open consumer gate, and if it declares
// itself a producer, only if the producer gate is open too.
func (g *Gate) Admit(peer trust.EndpointID, role Role, cred *Credential) (Grant, error) {
	if role == "" {
		role = RoleConsumer
	}
	if _, err := ParseRole(string(role)); err != nil {
		return Grant{}, &Refusal{Code: status.Unauthenticated, Message: MsgCredentialRejected, Reason: err}
	}
	var verr error
	switch {
	case cred == nil:
		verr = errors.New("no credential presented")
	case cred.Role != role:
		verr = fmt.Errorf("%w: declared role %s, credential role %s", ErrMalformed, role, cred.Role)
	default:
		verr = cred.Verify(g.root, peer, g.p.Now(), g.p.ClockSkew)
		if verr == nil && cred.Type == TypeOTT {
			verr = g.nonces.Use(cred.Nonce, cred.ExpiresAt.Add(g.p.ClockSkew), g.p.Now())
		}
	}
	if verr == nil {
		return Grant{Role: cred.Role, Name: cred.Name, Capabilities: cred.Capabilities, Attributes: cred.Attributes, Unrestricted: g.p.AllowAllConsumers}, nil
	}
	open := g.p.AllowAllConsumers && (role == RoleConsumer || g.p.AllowAllProducers)
	if open {
		return Grant{Role: role, Unrestricted: true}, nil
	}
	msg := MsgCredentialRejected
	if cred == nil {
		msg = MsgCredentialRequired
	}
	return Grant{}, &Refusal{Code: status.Unauthenticated, Message: msg, Reason: verr}
}

// NonceStore remembers the nonces of one-time credentials until they
// expire, in memory and optionally in a file. It is safe for concurrent use.
type NonceStore struct {
	mu   sync.Mutex
	path string
	used map[string]time.Time // hex nonce → expiry
}

// maxNonces bounds the store; beyond it, Use refuses new tokens (after
// dropping expired ones) rather than grow without limit.
const maxNonces = 1 << 20

// NewNonceStore returns a store; with a path ("~" expanded) it loads the
// nonces recorded there (skipping expired ones) and appends new ones.
func NewNonceStore(path string) (*NonceStore, error) {
	s := &NonceStore{used: map[string]time.Time{}}
	if path == "" {
		return s, nil
	}
	p, err := trust.ExpandHome(path)
	if err != nil {
		return nil, err
	}
	s.path = p
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust: nonce store: %w", err)
	}
	defer f.Close()
	now := time.Now()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		hexNonce, exp, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue // a torn last line from a crash: ignore it
		}
		sec, err := strconv.ParseInt(exp, 10, 64)
		if _, herr := hex.DecodeString(hexNonce); err != nil || herr != nil {
			return nil, fmt.Errorf("trust: nonce store %s line %d is malformed", p, n)
		}
		if t := time.Unix(sec, 0); t.After(now) && len(s.used) < maxNonces {
			s.used[hexNonce] = t
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("trust: nonce store %s: %w", p, err)
	}
	return s, nil
}

// Use records nonce, valid until expires. It fails with ErrReplayed if the
// nonce was used before.
func (s *NonceStore) Use(nonce []byte, expires, now time.Time) error {
	k := hex.EncodeToString(nonce)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.used[k]; ok && t.After(now) {
		return ErrReplayed
	}
	if len(s.used) >= maxNonces {
		for n, t := range s.used {
			if !t.After(now) {
				delete(s.used, n)
			}
		}
		if len(s.used) >= maxNonces {
			return fmt.Errorf("trust: too many one-time credentials in use (%d)", maxNonces)
		}
	}
	if s.path != "" {
		if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
			return fmt.Errorf("trust: nonce store: %w", err)
		}
		f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("trust: nonce store: %w", err)
		}
		_, werr := fmt.Fprintf(f, "%s %d\n", k, expires.Unix())
		if werr == nil {
			werr = f.Sync()
		}
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("trust: nonce store: %w", werr)
		}
	}
	s.used[k] = expires
	return nil
}
