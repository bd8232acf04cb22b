package webtransport

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/aster-go/aster/trust"
)

// The identity exchange (PROTOCOL.md section 18) runs on the first
// bidirectional stream of a session, which the server opens:
//
//	server → client  CHALLENGE  version(1) | server id(32) | nonce(32) | cert signature(64)
//	client → server  PROOF      version(1) | client id(32) | proof signature(64), then FIN
//	server → client  RESULT     0x00, then FIN
//
// The cert signature is the server endpoint key's ed25519 signature over
// certContext | SHA-256(served certificate DER). The proof signature is the
// client endpoint key's signature over
// proofContext | server id | nonce | client id, where the server id is the
// one the client dialled (never the one in the challenge).
const (
	identityVersion = 0x01
	challengeLen    = 1 + 32 + 32 + ed25519.SignatureSize
	proofLen        = 1 + 32 + ed25519.SignatureSize
	resultAccepted  = 0x00
	// proofContext prefixes the message a client signs.
	proofContext = "aster/1 webtransport client proof\x00"
)

// errBadProof is wrapped when a peer's identity message is malformed or its
// signature does not verify.
var errBadProof = errors.New("webtransport: identity proof failed")

type challenge struct {
	server  trust.EndpointID
	nonce   [32]byte
	certSig []byte
}

func newChallenge(server trust.EndpointID, certSig []byte) (*challenge, error) {
	c := &challenge{server: server, certSig: certSig}
	if _, err := rand.Read(c.nonce[:]); err != nil {
		return nil, fmt.Errorf("webtransport: nonce: %w", err)
	}
	return c, nil
}

func (c *challenge) marshal() []byte {
	b := make([]byte, 0, challengeLen)
	b = append(b, identityVersion)
	b = append(b, c.server[:]...)
	b = append(b, c.nonce[:]...)
	return append(b, c.certSig...)
}

func readChallenge(r io.Reader) (*challenge, error) {
	var b [challengeLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, fmt.Errorf("reading challenge: %w", err)
	}
	if b[0] != identityVersion {
		return nil, fmt.Errorf("%w: challenge version %d, want %d", errBadProof, b[0], identityVersion)
	}
	c := &challenge{certSig: append([]byte(nil), b[65:]...)}
	copy(c.server[:], b[1:33])
	copy(c.nonce[:], b[33:65])
	return c, nil
}

// proofMessage is what a client signs.
func proofMessage(server trust.EndpointID, nonce [32]byte, client trust.EndpointID) []byte {
	m := make([]byte, 0, len(proofContext)+96)
	m = append(m, proofContext...)
	m = append(m, server[:]...)
	m = append(m, nonce[:]...)
	return append(m, client[:]...)
}

// signProof builds a PROOF message.
func signProof(key trust.SecretKey, client, server trust.EndpointID, nonce [32]byte) []byte {
	b := make([]byte, 0, proofLen)
	b = append(b, identityVersion)
	b = append(b, client[:]...)
	return append(b, ed25519.Sign(ed25519.PrivateKey(key), proofMessage(server, nonce, client))...)
}

// readProof reads a PROOF message followed by FIN and verifies it against
// the challenge; it returns the proven client id.
func readProof(r io.Reader, server trust.EndpointID, nonce [32]byte) (trust.EndpointID, error) {
	var b [proofLen + 1]byte
	n, err := io.ReadFull(r, b[:])
	switch {
	case err == io.ErrUnexpectedEOF && n == proofLen:
	case err == nil:
		return trust.EndpointID{}, fmt.Errorf("%w: proof longer than %d bytes", errBadProof, proofLen)
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		return trust.EndpointID{}, fmt.Errorf("%w: proof of %d bytes, want %d", errBadProof, n, proofLen)
	default:
		return trust.EndpointID{}, fmt.Errorf("reading proof: %w", err)
	}
	if b[0] != identityVersion {
		return trust.EndpointID{}, fmt.Errorf("%w: proof version %d, want %d", errBadProof, b[0], identityVersion)
	}
	var client trust.EndpointID
	copy(client[:], b[1:33])
	if !ed25519.Verify(ed25519.PublicKey(client[:]), proofMessage(server, nonce, client), b[33:proofLen]) {
		return trust.EndpointID{}, fmt.Errorf("%w: bad signature for client %s", errBadProof, client.Short())
	}
	return client, nil
}

// verifyCertSig reports whether id signed the certificate hash.
func verifyCertSig(id trust.EndpointID, hash [32]byte, sig []byte) bool {
	return len(sig) == ed25519.SignatureSize && ed25519.Verify(ed25519.PublicKey(id[:]), certMessage(hash), sig)
}
