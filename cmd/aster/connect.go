package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// connectFlags are the flags of every command that connects to a server.
type connectFlags struct {
	rcan           string
	connectTimeout time.Duration
}

// rcanUsage is the help text of --rcan.
const rcanUsage = "present the enrollment credential in this .aster-identity `file` (default: ASTER_ENROLLMENT_CREDENTIAL or ASTER_IDENTITY_FILE from the config)"

// register adds --rcan and --connect-timeout to cmd.
func (f *connectFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.rcan, "rcan", "", rcanUsage)
	cmd.Flags().DurationVar(&f.connectTimeout, "connect-timeout", 10*time.Second, "limit for connecting and fetching the contract")
}

// loadClientConfig resolves the configuration a client command uses: the
// file named by --config, then ASTER_* variables, checking only client
// settings (config.LoadClient), so that server-only settings (health,
// monitoring, hooks, gates) never stop a client. Warnings go to stderr.
func loadClientConfig(c *cobra.Command) (config.Config, error) {
	file, _ := c.Flags().GetString(configFlag)
	strict, _ := c.Flags().GetBool(strictFlag)
	cfg, err := config.LoadClient(file, strict && file != "")
	if err != nil {
		return config.Config{}, configError(err)
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(c.ErrOrStderr(), "warning:", w)
	}
	return cfg, nil
}

// splitTarget takes the target off the front of args. The first argument
// is the target unless connect.endpoint_addr (ASTER_ENDPOINT_ADDR) is
// configured and it does not look like one (an aster1... address, a hex
// endpoint id or a scheme:// name); then the configured address is the
// target. need is the number of arguments the command needs besides the
// target.
func splitTarget(cfg *config.Config, args []string, need int) (target string, rest []string, err error) {
	if cfg.EndpointAddr != "" && (len(args) == need || (len(args) > 0 && !looksLikeTarget(args[0]))) {
		return cfg.EndpointAddr, args, nil
	}
	if len(args) == 0 {
		return "", nil, usageErrorf("no target: give an aster1... address or set ASTER_ENDPOINT_ADDR ([connect] endpoint_addr)")
	}
	return args[0], args[1:], nil
}

// looksLikeTarget reports whether s is written as a target rather than a
// service or method name.
func looksLikeTarget(s string) bool {
	if strings.HasPrefix(s, "aster1") || strings.Contains(s, "://") {
		return true
	}
	_, err := aster.ParseAddress(s)
	return err == nil
}

// credInfo is the credential a command presents, kept to explain a refusal.
type credInfo struct {
	key      trust.SecretKey
	cred     *enroll.Credential
	from     string   // "--rcan FILE", "ASTER_ENROLLMENT_CREDENTIAL", ...
	warnings []string // about the file (e.g. readable by others)
}

// clientSetup is everything a command needs to dial.
type clientSetup struct {
	cfg     *config.Config // for service targets ([discovery] settings)
	opts    []aster.ClientOption
	cred    *credInfo // nil: no credential presented
	skipped string    // the warning about an identity file skipped, if any
}

// setupClient turns the configuration and --rcan into client options.
func setupClient(c *cobra.Command, cfg *config.Config, rcan string) (*clientSetup, error) {
	before := len(cfg.Warnings())
	opts, err := cfg.ClientOptions()
	if err != nil {
		return nil, configError(err)
	}
	s := &clientSetup{cfg: cfg, opts: opts}
	for _, w := range cfg.Warnings()[before:] {
		fmt.Fprintln(c.ErrOrStderr(), "warning:", w)
		if strings.HasPrefix(w, "ignoring ") {
			s.skipped = w
		}
	}
	if rcan != "" {
		credOpts, info, err := credentialOptions(rcan)
		if err != nil {
			return nil, err
		}
		s.opts = append(s.opts, credOpts...)
		s.cred = info
		for _, w := range info.warnings {
			fmt.Fprintln(c.ErrOrStderr(), "warning:", w)
		}
		return s, nil
	}
	s.cred = configCredential(cfg)
	return s, nil
}

// configCredential returns the credential cfg.ClientOptions presents, or
// nil (it has been loaded successfully once already).
func configCredential(cfg *config.Config) *credInfo {
	var file, from string
	switch {
	case cfg.EnrollmentCredentialFile != "":
		file, from = cfg.EnrollmentCredentialFile, cfg.Source("trust.enrollment_credential_file")
	case cfg.SecretKey == nil && cfg.IdentityFile != "":
		file, from = cfg.IdentityFile, cfg.Source("identity.identity_file")
		if from == config.SourceDefault {
			from = "./" + cfg.IdentityFile
		}
	default:
		return nil
	}
	id, err := identity.Load(file)
	if err != nil || id.Key == nil {
		return nil
	}
	cred, err := id.Credential("")
	if err != nil {
		return nil
	}
	return &credInfo{key: id.Key, cred: cred, from: from}
}

// target is a connected server, or fleet of producers: the client and its
// contract.
type target struct {
	client conn          // a *aster.Client, or a fleet (fleet.go)
	addr   aster.Address // zero for a fleet
	ct     *contract.Contract
	id     string // the contract id
}

// connect dials rawAddr and fetches its contract within f.connectTimeout,
// mapping failures to exit statuses: an admission refusal is
// UNAUTHENTICATED (exit 26) with the likely reason, anything else that
// stops the connection is "cannot connect" (exit 3). The contract is saved
// in the completion cache.
func connect(ctx context.Context, c *cobra.Command, rawAddr string, f *connectFlags, s *clientSetup, extra ...aster.ClientOption) (*target, error) {
	if discovery.IsTarget(rawAddr) {
		return connectFleet(ctx, c, rawAddr, f, s, extra...)
	}
	addr, err := aster.ParseAddress(rawAddr)
	if err != nil {
		return nil, usageErrorf("bad address: %w", err)
	}
	dialCtx := ctx
	if f.connectTimeout > 0 {
		var cancel context.CancelFunc
		dialCtx, cancel = context.WithTimeout(ctx, f.connectTimeout)
		defer cancel()
	}
	opts := append(append([]aster.ClientOption{}, s.opts...), extra...)
	client, err := aster.DialAddress(dialCtx, addr, withTransport(addr, opts)...)
	if err != nil {
		return nil, dialFailure(ctx, err, s)
	}
	ct, id, err := client.Contract(dialCtx)
	if err != nil {
		client.Close()
		return nil, dialFailure(ctx, fmt.Errorf("fetching the contract: %w", err), s)
	}
	saveCachedContract(addr, ct, id)
	return &target{client: clientConn{Client: client, addr: addr}, addr: addr, ct: ct, id: id}, nil
}

// dialFailure maps an error from dialling or fetching the contract.
func dialFailure(ctx context.Context, err error, s *clientSetup) error {
	if ctx.Err() != nil && status.CodeOf(err) == status.Canceled {
		return callError(status.New(status.Canceled, "interrupted while connecting"))
	}
	if isAdmissionRefusal(err) {
		ae := admissionError(err, s.cred, time.Now())
		if s.cred == nil && s.skipped != "" {
			ae.msg += " (" + s.skipped + ")"
		}
		return ae
	}
	return connectError(err)
}

// isAdmissionRefusal tells a server's refusal to admit this client
// (UNAUTHENTICATED from the admission exchange) from a failure to reach it
// (including a peer whose key is not the address's: also UNAUTHENTICATED,
// but a connection failure).
func isAdmissionRefusal(err error) bool {
	return status.CodeOf(err) == status.Unauthenticated && !errors.Is(err, transport.ErrPeerMismatch)
}

// admissionError reports an admission refusal (exit 26). The server says
// only that it refused (it does not tell a stranger why); the reason is
// found by checking the presented credential here.
func admissionError(err error, cred *credInfo, now time.Time) *cliError {
	msg := status.FromError(err).Message()
	msg = strings.Replace(msg, "admission refused: admission refused", "admission refused", 1)
	return &cliError{exit: ExitCodeFor(status.Unauthenticated), code: status.Unauthenticated, msg: msg + ": " + refusalReason(cred, now), err: err}
}

// refusalReason explains why a server likely refused cred.
func refusalReason(ci *credInfo, now time.Time) string {
	if ci == nil {
		return "no credential was presented (a server that admits only enrolled peers needs one: --rcan FILE, ASTER_ENROLLMENT_CREDENTIAL or ASTER_IDENTITY_FILE)"
	}
	c := ci.cred
	switch {
	case !now.Before(c.ExpiresAt):
		return fmt.Sprintf("the credential from %s expired at %s (servers allow %v of clock skew)", ci.from, c.ExpiresAt.UTC().Format(time.RFC3339), enroll.DefaultClockSkew)
	case c.EndpointID != trust.IDOf(ci.key):
		return fmt.Sprintf("the credential from %s is bound to endpoint %s, not to this node's key %s (was it copied from another node?)", ci.from, c.EndpointID.Short(), trust.IDOf(ci.key).Short())
	case c.VerifySignature() != nil:
		return fmt.Sprintf("the credential from %s has a bad signature", ci.from)
	case now.Before(c.IssuedAt.Add(-enroll.DefaultClockSkew)):
		return fmt.Sprintf("the credential from %s is not valid before %s", ci.from, c.IssuedAt.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("the server does not accept the credential from %s: signed by root %s, which is not the root it trusts, or its role or attributes do not fit", ci.from, c.RootPubKey.Short())
}
