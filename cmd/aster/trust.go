package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

func init() {
	addCommand(newTrustCmd)
	addCommand(newEnrollCmd)
}

// defaultRootKey is where "aster trust keygen" writes, and where the signing
// commands look, by default.
const defaultRootKey = "~/.aster/root.key"

func newTrustCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trust",
		Short: "Manage the root of trust: root keys, signing and inspecting credentials",
		Long: `The root key is the trust anchor of a deployment: it signs enrollment
credentials offline; servers only need its public key (root.pub).`,
	}
	cmd.AddCommand(newKeygenCmd(), newSignCmd(), newInspectCmd())
	return cmd
}

func newKeygenCmd() *cobra.Command {
	var outKey string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Generate an ed25519 root key pair",
		Long: `Generate an ed25519 root key pair. The private key is written to --out-key
(mode 0600) and the public key beside it, with ".pub" in place of ".key".
An existing private key is never replaced without --force.`,
		Example: "  aster trust keygen --out-key ~/.aster/root.key",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := trust.ExpandHome(outKey)
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err == nil && !force {
				return usageErrorf("%s already exists; use --force to overwrite it", outKey)
			}
			if _, err := trust.WriteRootKey(path, trust.GenerateKey(), force); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			keyShown := tildePath(outKey)
			pubShown := trust.PublicKeyPath(keyShown)
			fmt.Fprintf(w, "Root private key written to: %s\n", keyShown)
			fmt.Fprintf(w, "Root public key written to: %s\n", pubShown)
			fmt.Fprintf(w, "Keep %s secret. Share %s with nodes that need to verify credentials.\n", filepath.Base(keyShown), filepath.Base(pubShown))
			return nil
		},
	}
	cmd.Flags().StringVar(&outKey, "out-key", defaultRootKey, "where to write the root private key (the public key goes beside it)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing key")
	return cmd
}

// tildePath shows a path under the home directory as "~/...", the way the
// user most likely typed it (the shell expands "~" before aster sees it).
func tildePath(p string) string {
	home, err := os.UserHomeDir()
	if err != nil || home == "" || home == "/" {
		return p
	}
	if rel, ok := strings.CutPrefix(p, home+string(filepath.Separator)); ok {
		return "~/" + filepath.ToSlash(rel)
	}
	return p
}

// credFlags are the flags shared by "enroll node" and "trust sign".
type credFlags struct {
	role    string
	name    string
	caps    []string
	rootKey string
	expires string
	attrs   []string
	typ     string
	quiet   bool
	force   bool
	out     string
}

func (f *credFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.role, "role", "consumer", `role of the peer: "consumer" (calls services) or "producer"`)
	fl.StringVar(&f.name, "name", "", "name of the peer, e.g. edge-node-7 (required)")
	fl.StringSliceVar(&f.caps, "capabilities", nil, "comma-separated capabilities to grant, e.g. ops.status,ops.ingest")
	fl.StringVar(&f.rootKey, "root-key", defaultRootKey, "root private key that signs the credential")
	fl.StringVar(&f.expires, "expires", "30d", "validity: relative (30d, 24h, 90m) or an RFC 3339 time")
	fl.StringArrayVar(&f.attrs, "attr", nil, "attribute key=value to attest (repeatable)")
	fl.StringVar(&f.typ, "type", "policy", `credential type: "policy" (reusable) or "ott" (one-time token)`)
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "print only: <path> <endpoint_id> <expires_iso>")
	fl.BoolVar(&f.force, "force", false, "replace an existing --out file")
}

// credential builds and signs the credential the flags describe for the
// endpoint ep.
func (f *credFlags) credential(ep trust.EndpointID, now time.Time) (*enroll.Credential, error) {
	if f.name == "" {
		return nil, usageErrorf("--name is required")
	}
	if err := enroll.ValidName(f.name); err != nil {
		return nil, usageErrorf("--name: %v", err)
	}
	role, err := enroll.ParseRole(f.role)
	if err != nil {
		return nil, usageErrorf("--role: %v", err)
	}
	typ, err := enroll.ParseCredentialType(f.typ)
	if err != nil {
		return nil, usageErrorf("--type: %v", err)
	}
	var caps []string
	for _, c := range f.caps {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if err := trust.ValidCapability(c); err != nil {
			return nil, usageErrorf("--capabilities: %v", err)
		}
		caps = append(caps, c)
	}
	var attrs map[string]string
	for _, a := range f.attrs {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, usageErrorf("--attr %q: want key=value", a)
		}
		if err := enroll.ValidAttribute(k, v); err != nil {
			return nil, usageErrorf("--attr: %v", err)
		}
		if attrs == nil {
			attrs = map[string]string{}
		}
		attrs[k] = v
	}
	exp, err := parseExpiry(f.expires, now)
	if err != nil {
		return nil, usageErrorf("--expires: %v", err)
	}
	rootPath, err := trust.ExpandHome(f.rootKey)
	if err != nil {
		return nil, err
	}
	root, err := trust.ReadRootKey(rootPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, usageErrorf("root key %s not found (create one with: aster trust keygen --out-key %s)", f.rootKey, f.rootKey)
		}
		return nil, usageErrorf("--root-key: %v", err)
	}
	c := &enroll.Credential{
		Type: typ, Role: role, Name: f.name, EndpointID: ep,
		Capabilities: caps, Attributes: attrs, IssuedAt: now, ExpiresAt: exp,
	}
	if typ == enroll.TypeOTT {
		c.Nonce = enroll.NewNonce()
	}
	if err := enroll.Sign(root, c); err != nil {
		return nil, usageErrorf("%v", err)
	}
	return c, nil
}

// parseExpiry parses a relative duration ("30d", "24h", "1d12h") or an RFC
// 3339 time; the result must lie in the future.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	var t time.Time
	if ts, err := time.Parse(time.RFC3339, s); err == nil {
		t = ts
	} else {
		d, err := parseRelative(s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is neither a duration like 30d or 24h nor an RFC 3339 time", s)
		}
		t = now.Add(d)
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("%s is not in the future", enroll.FormatTime(t))
	}
	return t, nil
}

// parseRelative is time.ParseDuration plus a leading "<n>d" for days.
func parseRelative(s string) (time.Duration, error) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, err
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	return days + d, nil
}

func newSignCmd() *cobra.Command {
	var f credFlags
	var endpoint string
	cmd := &cobra.Command{
		Use:   "sign --endpoint-id HEX --name NAME [flags]",
		Short: "Sign a credential for an existing endpoint id",
		Long: `Sign an enrollment credential for an endpoint whose secret key is kept
elsewhere. With --out the credential is written as an .aster-identity peer
entry (added to the file if it exists, replacing an entry of the same name);
without it, the TOML is printed on stdout.`,
		Example: `  aster trust sign --endpoint-id 3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c \
    --name billing-producer --role producer --out billing.cred`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if endpoint == "" {
				return usageErrorf("--endpoint-id is required")
			}
			ep, err := trust.ParseEndpointID(endpoint)
			if err != nil {
				return usageErrorf("--endpoint-id: %v", err)
			}
			c, err := f.credential(ep, time.Now())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if f.out == "" {
				b, err := (&identity.Identity{Peers: []*enroll.Credential{c}}).Marshal()
				if err != nil {
					return err
				}
				_, err = w.Write(b)
				return err
			}
			path, err := trust.ExpandHome(f.out)
			if err != nil {
				return err
			}
			id := &identity.Identity{}
			if _, err := os.Stat(path); err == nil {
				if id, err = identity.Load(path); err != nil {
					return usageErrorf("--out: %v", err)
				}
				if id.Key != nil && id.ID() != ep {
					return usageErrorf("--out %s belongs to endpoint %s, not %s", f.out, id.ID().Short(), ep.Short())
				}
			}
			id.SetPeer(c)
			if err := identity.Save(path, id); err != nil {
				return err
			}
			abs, _ := filepath.Abs(path)
			if f.quiet {
				fmt.Fprintf(w, "%s %s %s\n", abs, ep, enroll.FormatTime(c.ExpiresAt))
				return nil
			}
			fmt.Fprintf(w, "✓ Credential signed\n\nFile: %s\n\n", abs)
			printCredSummary(w, c)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&endpoint, "endpoint-id", "", "endpoint id (64 hex characters) the credential is issued to (required)")
	cmd.Flags().StringVar(&f.out, "out", "", "identity file to add the credential to (default: print it)")
	return cmd
}

func printCredSummary(w io.Writer, c *enroll.Credential) {
	fmt.Fprintf(w, "Peer: %s\n", c.Name)
	fmt.Fprintf(w, "Role: %s (%s)\n", c.Role, c.Type)
	fmt.Fprintf(w, "Capabilities: %s\n", strings.Join(c.Capabilities, ","))
	fmt.Fprintf(w, "Endpoint ID: %s...\n", c.EndpointID.Short())
	fmt.Fprintf(w, "Trust root: %s...\n", c.RootPubKey.Short())
	fmt.Fprintf(w, "Expires: %s\n", enroll.FormatTime(c.ExpiresAt))
}

func newInspectCmd() *cobra.Command {
	var rootArg, peer string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show the credentials in an identity file and whether they verify",
		Long: `Show the node and the credentials of an .aster-identity file, check each
credential's signature and validity period, and with --root whether it was
signed by that root. Exits with status 1 if a credential does not verify.`,
		Example: "  aster trust inspect edge-node-7.cred --root ~/.aster/root.pub",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := identity.Load(args[0])
			if err != nil {
				return usageErrorf("%v", err)
			}
			var root *trust.PublicKey
			if rootArg != "" {
				r, err := trust.ParseRootPublicKey(rootArg)
				if err != nil {
					if r, err = trust.ReadRootPublicKey(rootArg); err != nil {
						return usageErrorf("--root: %v", err)
					}
				}
				root = &r
			}
			return inspect(cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], id, root, peer, asJSON, time.Now())
		},
	}
	cmd.Flags().StringVar(&rootArg, "root", "", "root public key (file, or 64 hex characters) the credentials must be signed by")
	cmd.Flags().StringVar(&peer, "peer", "", "inspect only the peer entry with this name")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

type inspectPeer struct {
	Name         string            `json:"name"`
	Role         string            `json:"role"`
	Type         string            `json:"type"`
	Capabilities []string          `json:"capabilities"`
	Attributes   map[string]string `json:"attributes"`
	EndpointID   string            `json:"endpoint_id"`
	RootPubKey   string            `json:"root_pubkey"`
	IssuedAt     string            `json:"issued_at"`
	ExpiresAt    string            `json:"expires_at"`
	Valid        bool              `json:"valid"`
	Problem      string            `json:"problem,omitempty"`
	MatchesNode  *bool             `json:"matches_node,omitempty"`
}

type inspectReport struct {
	File     string        `json:"file"`
	Node     string        `json:"node_endpoint_id,omitempty"`
	Root     string        `json:"root,omitempty"`
	Peers    []inspectPeer `json:"peers"`
	Warnings []string      `json:"warnings,omitempty"`
}

func inspect(w, errw io.Writer, file string, id *identity.Identity, root *trust.PublicKey, only string, asJSON bool, now time.Time) error {
	abs, _ := filepath.Abs(file)
	rep := inspectReport{File: abs, Warnings: id.Warnings, Peers: []inspectPeer{}}
	if id.Key != nil {
		rep.Node = id.ID().String()
	}
	if root != nil {
		rep.Root = root.String()
	}
	var bad []string
	for _, c := range id.Peers {
		if only != "" && c.Name != only {
			continue
		}
		p := inspectPeer{
			Name: c.Name, Role: string(c.Role), Type: string(c.Type), Capabilities: c.Capabilities,
			Attributes: c.Attributes, EndpointID: c.EndpointID.String(), RootPubKey: c.RootPubKey.String(),
			IssuedAt: enroll.FormatTime(c.IssuedAt), ExpiresAt: enroll.FormatTime(c.ExpiresAt),
		}
		if p.Capabilities == nil {
			p.Capabilities = []string{}
		}
		r := c.RootPubKey
		if root != nil {
			r = *root
		}
		// The binding to a connection cannot be checked offline: check the
		// rest against the credential's own endpoint id.
		if err := c.Verify(r, c.EndpointID, now, 0); err != nil {
			p.Problem = err.Error()
			bad = append(bad, c.Name)
		}
		p.Valid = p.Problem == ""
		if id.Key != nil {
			m := c.EndpointID == id.ID()
			p.MatchesNode = &m
			if !m {
				p.Valid = false
				p.Problem = "issued to another endpoint than this file's [node]"
				bad = append(bad, c.Name)
			}
		}
		rep.Peers = append(rep.Peers, p)
	}
	if only != "" && len(rep.Peers) == 0 {
		return usageErrorf("%s has no peer entry named %q", file, only)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		for _, wn := range rep.Warnings {
			fmt.Fprintln(errw, "warning:", wn)
		}
		fmt.Fprintf(w, "File: %s\n", rep.File)
		if rep.Node != "" {
			fmt.Fprintf(w, "Node: %s (secret key present)\n", rep.Node)
		} else {
			fmt.Fprintln(w, "Node: none (no [node] section)")
		}
		for _, p := range rep.Peers {
			fmt.Fprintf(w, "\nPeer: %s\n", p.Name)
			fmt.Fprintf(w, "Role: %s (%s)\n", p.Role, p.Type)
			fmt.Fprintf(w, "Capabilities: %s\n", strings.Join(p.Capabilities, ","))
			if len(p.Attributes) > 0 {
				var kv []string
				for k, v := range p.Attributes {
					kv = append(kv, k+"="+v)
				}
				fmt.Fprintf(w, "Attributes: %s\n", strings.Join(kv, ","))
			}
			fmt.Fprintf(w, "Endpoint ID: %s\n", p.EndpointID)
			fmt.Fprintf(w, "Trust root: %s\n", p.RootPubKey)
			fmt.Fprintf(w, "Issued: %s\n", p.IssuedAt)
			fmt.Fprintf(w, "Expires: %s\n", p.ExpiresAt)
			against := "its own trust root"
			if root != nil {
				against = "root " + root.Short() + "..."
			}
			if p.Valid {
				fmt.Fprintf(w, "Verifies against %s: yes\n", against)
			} else {
				fmt.Fprintf(w, "Verifies against %s: NO (%s)\n", against, p.Problem)
			}
		}
	}
	if len(bad) > 0 {
		return &cliError{exit: ExitFailure, code: status.Unauthenticated, msg: "credential does not verify: " + strings.Join(bad, ", ")}
	}
	return nil
}
