package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

func newEnrollCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Issue enrollment credentials",
	}
	cmd.AddCommand(newEnrollNodeCmd())
	return cmd
}

func newEnrollNodeCmd() *cobra.Command {
	var f credFlags
	var identityFile string
	cmd := &cobra.Command{
		Use:   "node --name NAME [flags]",
		Short: "Create a node identity with a signed enrollment credential",
		Long: `Create a node key, sign an enrollment credential bound to its endpoint id
with the root key, and write both to an .aster-identity TOML file ([node] +
[[peers]]). With --identity the node key of an existing file is reused and
the credential added to it (an entry with the same name is replaced).

An existing --out file is only replaced with --force.`,
		Example: `  aster enroll node --role consumer --name edge-node-7 \
    --capabilities ops.status,ops.ingest \
    --root-key ~/.aster/root.key --out edge-node-7.cred`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := f.out
			id := &identity.Identity{}
			if identityFile != "" {
				var err error
				if id, err = identity.Load(identityFile); err != nil {
					return usageErrorf("--identity: %v", err)
				}
				if id.Key == nil {
					return usageErrorf("--identity %s has no [node] secret_key", identityFile)
				}
				for _, wn := range id.Warnings {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", wn)
				}
				if out == "" {
					out = identityFile
				}
			} else {
				id.Key = trust.GenerateKey()
			}
			if out == "" {
				if f.name == "" {
					return usageErrorf("--name is required")
				}
				out = f.name + ".cred"
			}
			path, err := trust.ExpandHome(out)
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err == nil && !f.force && !samePath(out, identityFile) {
				return usageErrorf("%s already exists; pass --identity %s to add a credential to it, or --force to replace it", out, out)
			}
			c, err := f.credential(id.ID(), time.Now())
			if err != nil {
				return err
			}
			id.SetPeer(c)
			if err := identity.Save(path, id); err != nil {
				return err
			}
			abs, _ := filepath.Abs(path)
			w := cmd.OutOrStdout()
			if f.quiet {
				fmt.Fprintf(w, "%s %s %s\n", abs, c.EndpointID, enroll.FormatTime(c.ExpiresAt))
				return nil
			}
			base := filepath.Base(out)
			fmt.Fprintf(w, "✓ Enrollment credential created\n\n")
			fmt.Fprintf(w, "File: %s\n", abs)
			fmt.Fprintf(w, "Format: TOML (.aster-identity) with [node] + [[peers]] sections\n\n")
			printCredSummary(w, c)
			if c.Role == enroll.RoleProducer {
				fmt.Fprintf(w, "\nThis file lets a producer join your trusted-mode deployment.\n")
			} else {
				fmt.Fprintf(w, "\nThis file lets a consumer connect to your trusted-mode servers.\n")
			}
			fmt.Fprintf(w, "It contains a node identity (secret key) AND a signed enrollment\n")
			fmt.Fprintf(w, "credential. The server validates the credential and grants the\n")
			fmt.Fprintf(w, "capabilities listed above.\n\n")
			fmt.Fprintf(w, "Use it:\n")
			if c.Role == enroll.RoleProducer {
				// A producer serves with it: its key is the node key, and
				// registry entries carry its credential (aster.services).
				fmt.Fprintf(w, "ASTER_IDENTITY_FILE=%s <your server>\n", base)
				fmt.Fprintf(w, "(with [discovery] set, its registry entries carry the credential, so\n")
				fmt.Fprintf(w, "clients with allow_all_producers=false accept it for the services in\n")
				fmt.Fprintf(w, "its aster.services attribute)\n\n")
			} else {
				fmt.Fprintf(w, "aster shell <peer-addr> --rcan %s\n", base)
				fmt.Fprintf(w, "aster call <peer-addr> Service.method '<json>' --rcan %s\n\n", base)
			}
			fmt.Fprintf(w, "⚠ Keep this file secret -- it is both an identity AND a credential.\n")
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&f.out, "out", "", "identity file to write (default: <name>.cred, or the --identity file)")
	cmd.Flags().StringVar(&identityFile, "identity", "", "reuse the node key of this .aster-identity file and add the credential to it")
	return cmd
}

// samePath reports whether a and b name the same file.
func samePath(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	pa, err1 := trust.ExpandHome(a)
	pb, err2 := trust.ExpandHome(b)
	if err1 != nil || err2 != nil {
		return false
	}
	sa, err1 := os.Stat(pa)
	sb, err2 := os.Stat(pb)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
