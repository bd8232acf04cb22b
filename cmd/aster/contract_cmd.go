package main

import (
	"fmt"
	"go/token"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/contract/gen"
	"github.com/aster-go/aster/status"
)

func init() { addCommand(newContractCmd) }

// defaultManifest is where "aster contract gen" writes and "verify" reads.
const defaultManifest = ".aster/manifest.json"

func newContractCmd() *cobra.Command {
	var f connectFlags
	cmd := &cobra.Command{
		Use:   "contract",
		Short: "Show, save, verify a server's contract and generate typed clients from it",
		Long: `A server describes its services, methods, wire types and required
capabilities in its contract; the SHA-256 of the contract's canonical CBOR is
its id. These commands read it from a running server (an aster1... address;
default: ASTER_ENDPOINT_ADDR) or from a saved manifest (.aster/manifest.json,
written by 'contract gen').`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return usageErrorf("missing subcommand (see '%s --help')", c.CommandPath())
		},
	}
	cmd.PersistentFlags().DurationVar(&f.connectTimeout, "connect-timeout", 10*time.Second, "limit for connecting and fetching the contract")
	cmd.PersistentFlags().StringVar(&f.rcan, "rcan", "", rcanUsage)
	for _, sub := range []*cobra.Command{newContractShowCmd(&f), newContractGenCmd(&f), newContractVerifyCmd(&f), newContractGenClientCmd(&f)} {
		cmd.AddCommand(exitsOnSIGTERM(sub))
	}
	return cmd
}

// contractSource returns the one argument of a contract command, or
// ASTER_ENDPOINT_ADDR when there is none.
func contractSource(c *cobra.Command, args []string) (string, error) {
	if len(args) > 1 {
		return "", usageErrorf("%s takes one <addr>; got %d arguments", c.CommandPath(), len(args))
	}
	if len(args) == 1 {
		return args[0], nil
	}
	cfg, err := loadClientConfig(c)
	if err != nil {
		return "", err
	}
	t, _, err := splitTarget(&cfg, nil, 0)
	return t, err
}

// loadContract reads the contract from src: a manifest file, or the server
// at an aster1 address.
func loadContract(cmd *cobra.Command, src string, f *connectFlags) (*contract.Contract, string, error) {
	if fi, err := os.Stat(src); err == nil && !fi.IsDir() {
		m, err := contract.ReadManifest(src)
		if err != nil {
			return nil, "", usageErrorf("%w", err)
		}
		return m.Contract, m.ContractID, nil
	}
	if !looksLikeTarget(src) {
		return nil, "", usageErrorf("%s is neither a manifest file nor an aster1... address", src)
	}
	return fetchLive(cmd, src, f)
}

// fetchLive connects to addr and fetches its contract.
func fetchLive(cmd *cobra.Command, rawAddr string, f *connectFlags) (*contract.Contract, string, error) {
	cfg, err := loadClientConfig(cmd)
	if err != nil {
		return nil, "", err
	}
	setup, err := setupClient(cmd, &cfg, f.rcan)
	if err != nil {
		return nil, "", err
	}
	tg, err := connect(cmd.Context(), cmd, rawAddr, f, setup)
	if err != nil {
		return nil, "", err
	}
	tg.client.Close()
	return tg.ct, tg.id, nil
}

func newContractShowCmd(f *connectFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show <addr|manifest.json>",
		Short: "Print a contract: services, methods, types, capabilities and its id",
		Example: `  aster contract show aster1...
  aster contract show --json aster1... > contract.json
  aster contract show .aster/manifest.json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			src, err := contractSource(c, args)
			if err != nil {
				return err
			}
			args = []string{src}
			ct, id, err := loadContract(c, args[0], f)
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

func newContractGenCmd(f *connectFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "gen <addr>",
		Short: "Save a running server's contract as a manifest to commit",
		Long: `gen fetches the contract of the server at <addr> and writes it with its id
to --out (default .aster/manifest.json). Commit the file: a server started
with aster.WithContractManifest refuses to serve when its live contract
differs, and 'aster contract verify' checks a running server against it.`,
		Example: `  aster contract gen aster1... --out .aster/manifest.json`,
		Args:    cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			src, err := contractSource(c, args)
			if err != nil {
				return err
			}
			args = []string{src}
			ct, id, err := fetchLive(c, args[0], f)
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

func newContractVerifyCmd(f *connectFlags) *cobra.Command {
	var manifest string
	cmd := &cobra.Command{
		Use:   "verify <addr>",
		Short: "Check a running server's contract against a committed manifest",
		Long: `verify fetches the contract of the server at <addr> and compares its id with
the manifest's (--manifest, default .aster/manifest.json). Equal: exit 0.
Different: the differences are printed ("+" added, "-" removed, "~" changed)
and the exit status is 19 (FAILED_PRECONDITION).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			src, err := contractSource(c, args)
			if err != nil {
				return err
			}
			args = []string{src}
			m, err := contract.ReadManifest(manifest)
			if err != nil {
				return usageErrorf("%w", err)
			}
			ct, id, err := fetchLive(c, args[0], f)
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

func newContractGenClientCmd(f *connectFlags) *cobra.Command {
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
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			src, err := contractSource(c, args)
			if err != nil {
				return err
			}
			args = []string{src}
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
			ct, id, err := loadContract(c, args[0], f)
			if err != nil {
				return err
			}
			code, err := gen.Go(ct, gen.GoOptions{Package: pkg, ContractID: id, Source: args[0]})
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			file := filepath.Join(out, gen.FileName)
			if err := os.WriteFile(file, code, 0o644); err != nil {
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
