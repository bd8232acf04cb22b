package main

import (
	"context"
	"fmt"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/contract/gen"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
)

func init() { addCommand(newContractCmd) }

// defaultManifest is where "aster contract gen" writes and "verify" reads.
const defaultManifest = ".aster/manifest.json"

func newContractCmd() *cobra.Command {
	var connectTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "contract",
		Short: "Show, save, verify a server's contract and generate typed clients from it",
		Long: `A server describes its services, methods, wire types and required
capabilities in its contract; the SHA-256 of the contract's canonical CBOR is
its id. These commands read it from a running server (an aster1... address)
or from a saved manifest (.aster/manifest.json, written by 'contract gen').`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return usageErrorf("missing subcommand (see '%s --help')", c.CommandPath())
		},
	}
	cmd.PersistentFlags().DurationVar(&connectTimeout, "connect-timeout", 10*time.Second, "limit for connecting and fetching the contract")
	cmd.AddCommand(newContractShowCmd(&connectTimeout), newContractGenCmd(&connectTimeout),
		newContractVerifyCmd(&connectTimeout), newContractGenClientCmd(&connectTimeout))
	return cmd
}

// loadContract reads the contract from src: a manifest file, or the server
// at an aster1 address.
func loadContract(cmd *cobra.Command, src string, connectTimeout time.Duration) (*contract.Contract, string, error) {
	if fi, err := os.Stat(src); err == nil && !fi.IsDir() {
		m, err := contract.ReadManifest(src)
		if err != nil {
			return nil, "", usageErrorf("%w", err)
		}
		return m.Contract, m.ContractID, nil
	}
	if !strings.HasPrefix(src, "aster1") && !discovery.IsTarget(src) {
		return nil, "", usageErrorf("%s is neither a manifest file nor an aster1... address", src)
	}
	return fetchLive(cmd, src, connectTimeout)
}

// fetchLive connects to addr and fetches its contract.
func fetchLive(cmd *cobra.Command, rawAddr string, connectTimeout time.Duration) (*contract.Contract, string, error) {
	if err := checkTarget(rawAddr); err != nil {
		return nil, "", err
	}
	cfg, err := loadCLIConfig(cmd, "")
	if err != nil {
		return nil, "", err
	}
	opts, err := cfg.ClientOptions()
	if err != nil {
		return nil, "", configError(err)
	}
	ctx := cmd.Context()
	if connectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, connectTimeout)
		defer cancel()
	}
	client, err := dialTarget(ctx, &cfg, rawAddr, opts, cmd.ErrOrStderr())
	if err != nil {
		return nil, "", err
	}
	defer client.Close()
	ct, id, err := client.Contract(ctx)
	if err != nil {
		return nil, "", connectError(fmt.Errorf("fetching the contract: %w", err))
	}
	return ct, id, nil
}

func newContractShowCmd(connectTimeout *time.Duration) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show <addr|manifest.json>",
		Short: "Print a contract: services, methods, types, capabilities and its id",
		Example: `  aster contract show aster1...
  aster contract show --json aster1... > contract.json
  aster contract show .aster/manifest.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ct, id, err := loadContract(c, args[0], *connectTimeout)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if asJSON {
				b, err := (&contract.Manifest{ContractID: id, Contract: ct}).MarshalIndent()
				if err != nil {
					return err
				}
				_, err = out.Write(b)
				return err
			}
			fmt.Fprintf(out, "contract %s\n%d services, %d types\n\n", id, len(ct.Services), len(ct.Types))
			printDescribe(out, ct, node{kind: nodeServices})
			fmt.Fprintln(out, "\ntypes:")
			all := map[string]bool{} // every type is listed: no nesting
			for _, t := range ct.Types {
				all[t.Name] = true
			}
			for _, t := range ct.Types {
				fmt.Fprintf(out, "  %s\n", t.Name)
				printFields(out, ct, t.Name, "    ", all)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"contract_id":...,"contract":{...}} (the manifest form)`)
	return cmd
}

func newContractGenCmd(connectTimeout *time.Duration) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "gen <addr>",
		Short: "Save a running server's contract as a manifest to commit",
		Long: `gen fetches the contract of the server at <addr> and writes it with its id
to --out (default .aster/manifest.json). Commit the file: a server started
with aster.WithContractManifest refuses to serve when its live contract
differs, and 'aster contract verify' checks a running server against it.`,
		Example: `  aster contract gen aster1... --out .aster/manifest.json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ct, id, err := fetchLive(c, args[0], *connectTimeout)
			if err != nil {
				return err
			}
			m, err := contract.WriteManifest(out, ct)
			if err != nil {
				return err
			}
			if m.ContractID != id {
				return fmt.Errorf("the manifest's id %s differs from the server's %s (a bug in the contract encoding)", m.ContractID, id)
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s (contract %s, %d services)\n", out, id, len(ct.Services))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", defaultManifest, "manifest file to write")
	return cmd
}

func newContractVerifyCmd(connectTimeout *time.Duration) *cobra.Command {
	var manifest string
	cmd := &cobra.Command{
		Use:   "verify <addr>",
		Short: "Check a running server's contract against a committed manifest",
		Long: `verify fetches the contract of the server at <addr> and compares its id with
the manifest's (--manifest, default .aster/manifest.json). Equal: exit 0.
Different: the differences are printed ("+" added, "-" removed, "~" changed)
and the exit status is 19 (FAILED_PRECONDITION).`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			m, err := contract.ReadManifest(manifest)
			if err != nil {
				return usageErrorf("%w", err)
			}
			ct, id, err := fetchLive(c, args[0], *connectTimeout)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if id == m.ContractID {
				fmt.Fprintf(out, "contract %s matches %s\n", id, manifest)
				return nil
			}
			diff := contract.Diff(m.Contract, ct)
			fmt.Fprintf(out, "contract %s differs from %s (%s):\n", id, manifest, m.ContractID)
			for _, d := range diff {
				fmt.Fprintln(out, "  "+d)
			}
			return callError(status.Errorf(status.FailedPrecondition, "the server's contract differs from %s in %d places", manifest, len(diff)))
		},
	}
	cmd.Flags().StringVar(&manifest, "manifest", defaultManifest, "the committed manifest")
	return cmd
}

func newContractGenClientCmd(connectTimeout *time.Duration) *cobra.Command {
	var lang, out, pkg string
	cmd := &cobra.Command{
		Use:   "gen-client <addr|manifest.json> --out DIR [--package NAME]",
		Short: "Generate a typed client package from a contract",
		Long: `gen-client writes a Go package to DIR/` + gen.FileName + `: one struct per wire type
(with cbor and json tags) and a typed client per service with one method per
RPC in the shape of its pattern. The contract comes from a running server or
a manifest; no source code of the server is needed. The package name
defaults to DIR's base name.`,
		Example: `  aster contract gen-client aster1... --lang go --out ./mcclient --package mcclient
  aster contract gen-client .aster/manifest.json --out ./internal/mc`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if lang != "go" {
				return usageErrorf("--lang %q: only go is supported", lang)
			}
			if out == "" {
				return usageErrorf("--out DIR is required")
			}
			if pkg == "" {
				abs, err := filepath.Abs(out)
				if err != nil {
					return err
				}
				pkg = filepath.Base(abs)
			}
			if !token.IsIdentifier(pkg) {
				return usageErrorf("package name %q is not a Go identifier (use --package)", pkg)
			}
			ct, id, err := loadContract(c, args[0], *connectTimeout)
			if err != nil {
				return err
			}
			src, err := gen.Go(ct, gen.GoOptions{Package: pkg, ContractID: id, Source: args[0]})
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			file := filepath.Join(out, gen.FileName)
			if err := os.WriteFile(file, src, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s (package %s, %d services, %d types, contract %s)\n", file, pkg, len(ct.Services), len(ct.Types), shortID(id))
			return nil
		},
	}
	cmd.Flags().StringVar(&lang, "lang", "go", "language of the client (go)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the package to")
	cmd.Flags().StringVar(&pkg, "package", "", "package name (default: the base name of --out)")
	return cmd
}
