package webtransport

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"testing"

	"github.com/aster-go/aster/trust"
)

// The identity exchange example quoted by PROTOCOL.md section 18: server
// seed 32×0x01, client seed 32×0x02, certificate hash 32×0xab, nonce
// 0x00…0x1f. ed25519 signatures are deterministic, so these bytes are too.
const (
	vectorChallengeHex = "01" +
		"8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c" + // server id
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" // nonce
	vectorProofPrefixHex = "01" +
		"8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394" // client id
)

func vectorKeys(t *testing.T) (server, client trust.SecretKey) {
	s, err := trust.KeyFromSeed(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	c, err := trust.KeyFromSeed(bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func TestIdentityVector(t *testing.T) {
	skey, ckey := vectorKeys(t)
	sid, cid := trust.IDOf(skey), trust.IDOf(ckey)
	var hash [32]byte
	for i := range hash {
		hash[i] = 0xab
	}
	var nonce [32]byte
	for i := range nonce {
		nonce[i] = byte(i)
	}
	certSig := ed25519.Sign(ed25519.PrivateKey(skey), certMessage(hash))
	ch := (&challenge{server: sid, nonce: nonce, certSig: certSig}).marshal()
	proof := signProof(ckey, cid, sid, nonce)
	t.Logf("server id      %x", sid[:])
	t.Logf("client id      %x", cid[:])
	t.Logf("cert message   %x", certMessage(hash))
	t.Logf("CHALLENGE (%d) %x", len(ch), ch)
	t.Logf("proof message  %x", proofMessage(sid, nonce, cid))
	t.Logf("PROOF (%d)     %x", len(proof), proof)
	if got := hex.EncodeToString(ch[:65]); got != vectorChallengeHex {
		t.Errorf("challenge prefix %s, want %s", got, vectorChallengeHex)
	}
	if got := hex.EncodeToString(proof[:33]); got != vectorProofPrefixHex {
		t.Errorf("proof prefix %s, want %s", got, vectorProofPrefixHex)
	}
	if hex.EncodeToString(ch[65:]) != vectorCertSigHex || hex.EncodeToString(proof[33:]) != vectorProofSigHex {
		t.Errorf("signatures differ from the vector:\ncert  %x\nproof %x", ch[65:], proof[33:])
	}
	if !verifyCertSig(sid, hash, ch[65:]) {
		t.Error("vector certificate signature does not verify")
	}
	got, err := readProof(bytes.NewReader(proof), sid, nonce)
	if err != nil || got != cid {
		t.Errorf("readProof(vector) = %s, %v", got.Short(), err)
	}
}

const (
	vectorCertSigHex  = "777787e743592608b294096fb672c73707f1e9c0fd4d4a22e6fa231a80a7a35e9c98c9350ff6f3fe3e60be54a275063587423c521a38807fc007683a64044c01"
	vectorProofSigHex = "e67b55e412eccd7dd1b7db241439c276a39ca0f507fe1e2e642d10d22390d6fe57339be6457acb1333de5b2566c032e6138557b8b95d1cb5376369d366c25507"
)
