package aster

import (
	"strings"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/status"
)

// checkManifest compares the live contract with the WithContractManifest
// manifest, if any.
func (s *Server) checkManifest() error {
	if s.opts.manifest == "" {
		return nil
	}
	m, err := contract.ReadManifest(s.opts.manifest)
	if err != nil {
		return status.Errorf(status.FailedPrecondition, "aster: contract manifest: %w", err)
	}
	c, raw, err := s.Contract()
	if err != nil {
		return status.Errorf(status.Internal, "aster: building the contract: %w", err)
	}
	if id := contract.ID(raw); id != m.ContractID {
		diff := contract.Diff(m.Contract, c)
		return status.Errorf(status.FailedPrecondition,
			"aster: the live contract %.12s differs from the manifest %s (%.12s): %s; if the change is intended, regenerate the manifest ('aster contract gen')",
			id, s.opts.manifest, m.ContractID, strings.Join(diff, "; "))
	}
	return nil
}
