package main

import (
	"github.com/aster-go/aster"
	"github.com/aster-go/aster/trust/identity"
)

// credentialOptions turns the --rcan flag into client options that present
// the enrollment credential in file (an .aster-identity file as "aster
// enroll node" writes it: its node key and its first consumer credential)
// when connecting. A file that cannot be read or parsed is a usage error
// (exit 2), reported before anything is dialled. "" means no flag: the
// configuration decides (ASTER_ENROLLMENT_CREDENTIAL, ASTER_IDENTITY_FILE).
func credentialOptions(file string) ([]aster.ClientOption, error) {
	if file == "" {
		return nil, nil
	}
	id, err := identity.Load(file)
	if err != nil {
		return nil, usageErrorf("--rcan %s: %w", file, err)
	}
	cred, err := id.Credential("")
	if err != nil {
		return nil, usageErrorf("--rcan %s: %w", file, err)
	}
	return []aster.ClientOption{aster.WithSecretKey(id.Key), aster.WithCredential(cred)}, nil
}
