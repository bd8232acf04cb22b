package main

import (
	"fmt"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/status"
)

// credentialOptions turns the --rcan flag into client options that present
// the enrollment credential in FILE on connect. It is the one place the
// shell (and later aster call) learn how to present credentials.
//
// TODO(trust): presenting credentials lands with the Trust issue. Wire it
// here: load FILE (the .aster-identity TOML: [node] key + [[peers]]
// credential) and return the client options that use its key and present
// its credential, e.g. aster.WithClientKey(...) plus the credential option.
func credentialOptions(file string) ([]aster.ClientOption, error) {
	if file == "" {
		return nil, nil
	}
	return nil, &cliError{exit: ExitUsage, code: status.Unimplemented,
		msg: fmt.Sprintf("--rcan %s: presenting enrollment credentials is not supported yet (it arrives with trust/admission support)", file)}
}
