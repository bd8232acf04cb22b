package main

import (
	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/trust/identity"
)

// credentialOptions turns the --rcan flag into client options that present
// the enrollment credential in file (an .aster-identity file as "aster
// enroll node" writes it: its node key and its first consumer credential)
// when connecting, and the credential for explaining a refusal. A file
// that cannot be read or parsed is a usage error (exit 2), reported before
// anything is dialled.
func credentialOptions(file string) ([]aster.ClientOption, *credInfo, error) {
	if err := config.CheckTextFile(file); err != nil {
		return nil, nil, usageErrorf("--rcan %s %w", file, err)
	}
	id, err := identity.Load(file)
	if err != nil {
		return nil, nil, usageErrorf("--rcan %s: %w", file, err)
	}
	if id.Key == nil {
		return nil, nil, usageErrorf("--rcan %s: the file has no [node] secret_key (a credential is used with the key it was issued to)", file)
	}
	cred, err := id.Credential("")
	if err != nil {
		return nil, nil, usageErrorf("--rcan %s: %w", file, err)
	}
	info := &credInfo{key: id.Key, cred: cred, from: "--rcan " + file, warnings: id.Warnings}
	return []aster.ClientOption{aster.WithSecretKey(id.Key), aster.WithCredential(cred)}, info, nil
}
