package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/status"
)

func init() {
	addCommand(newListCmd)
	addCommand(newDescribeCmd)
}

// fetchContract connects to the target in args (or ASTER_ENDPOINT_ADDR)
// and returns its contract and the arguments after the target.
func fetchContract(c *cobra.Command, f *connectFlags, args []string, need int) (*contract.Contract, []string, error) {
	cfg, err := loadClientConfig(c)
	if err != nil {
		return nil, nil, err
	}
	rawAddr, rest, err := splitTarget(&cfg, args, need)
	if err != nil {
		return nil, nil, err
	}
	setup, err := setupClient(c, &cfg, f.rcan)
	if err != nil {
		return nil, nil, err
	}
	tg, err := connect(c.Context(), c, rawAddr, f, setup)
	if err != nil {
		return nil, nil, err
	}
	tg.client.Close()
	return tg.ct, rest, nil
}

func newListCmd() *cobra.Command {
	var f connectFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [addr] [Service]",
		Short: "List a server's services, or the methods of one",
		Long: `list connects to the server at <addr> (an aster1... address; default:
ASTER_ENDPOINT_ADDR), fetches its contract and lists its services (name,
version, scope, number of methods) or, given a service ("Name" or
"Name@version"), its methods (pattern, request → response, required
capabilities, idempotency).

With --json: services as [{"name","version","scope","methods":[...]}], a
service as its contract entry {"name","version","scope","methods":[{"name",
"pattern","request","response","idempotent","requires"}]}.`,
		Example: `  aster list aster1...
  aster list aster1... MissionControl
  aster list --json aster1... | jq -r '.[].name'`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 2 {
				return usageErrorf("list takes [addr] [Service]; got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: completeServiceArg(false),
		RunE: func(c *cobra.Command, args []string) error {
			ct, rest, err := fetchContract(c, &f, args, 0)
			if err != nil {
				return err
			}
			if len(rest) > 1 {
				return usageErrorf("list takes [addr] [Service]; got %d arguments after the address", len(rest))
			}
			out := c.OutOrStdout()
			var text bytes.Buffer // names come from the server: sanitized before printing
			defer func() { io.WriteString(out, sanitize(text.String())) }()
			if len(rest) == 0 {
				if asJSON {
					type svc struct {
						Name    string   `json:"name"`
						Version uint32   `json:"version"`
						Scope   string   `json:"scope"`
						Methods []string `json:"methods"`
					}
					list := []svc{}
					for _, s := range ct.Services {
						e := svc{Name: s.Name, Version: s.Version, Scope: s.Scope, Methods: []string{}}
						for _, m := range s.Methods {
							e.Methods = append(e.Methods, m.Name)
						}
						list = append(list, e)
					}
					return writeJSON(out, list)
				}
				tw := tabwriter.NewWriter(&text, 0, 4, 2, ' ', 0)
				for i := range ct.Services {
					s := &ct.Services[i]
					fmt.Fprintf(tw, "%s\tv%d\t%s\t%d %s\n", serviceSegment(ct, s), s.Version, s.Scope, len(s.Methods), plural(len(s.Methods), "method", "methods"))
				}
				return tw.Flush()
			}
			s := lookupService(ct, rest[0])
			if s == nil {
				return callError(status.Errorf(status.NotFound, "no service %s (services: %s)", rest[0], serviceList(ct)))
			}
			if asJSON {
				return writeJSON(out, s)
			}
			printLs(&text, ct, node{kind: nodeService, svc: s})
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (see above)")
	return exitsOnSIGTERM(cmd)
}

func newDescribeCmd() *cobra.Command {
	var f connectFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "describe [addr] <Service[.method]>",
		Short: "Describe a service or method: pattern, types with their fields, capabilities",
		Long: `describe connects to the server at <addr> (an aster1... address; default:
ASTER_ENDPOINT_ADDR), fetches its contract and describes a method (pattern,
scope, required capabilities, idempotency, the request and response types
with their fields and the types they use) or every method of a service.
"Service@2.method" picks a service version.

With --json: {"service":{...},"methods":[{...}],"types":[{"name","fields":
[{"name","type":{...}}]}]}, the contract's own form of the service, the
methods described and every type they use.`,
		Example: `  aster describe aster1... MissionControl.getStatus
  aster describe aster1... AgentSession
  aster describe --json aster1... MissionControl.tailLogs`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("describe takes [addr] <Service[.method]>; got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: completeServiceArg(true),
		RunE: func(c *cobra.Command, args []string) error {
			ct, rest, err := fetchContract(c, &f, args, 1)
			if err != nil {
				return err
			}
			if len(rest) != 1 {
				return usageErrorf("describe takes [addr] <Service[.method]>; got %d arguments after the address", len(rest))
			}
			s, m, err := lookupMethod(ct, rest[0])
			if err != nil {
				return err
			}
			methods := s.Methods
			if m != nil {
				methods = []contract.Method{*m}
			}
			out := c.OutOrStdout()
			var text bytes.Buffer // names come from the server: sanitized before printing
			defer func() { io.WriteString(out, sanitize(text.String())) }()
			if asJSON {
				var types []contract.TypeDef
				seen := map[string]bool{}
				for _, m := range methods {
					types = appendTypes(types, ct, m.Request, seen)
					types = appendTypes(types, ct, m.Response, seen)
				}
				type service struct {
					Name    string `json:"name"`
					Version uint32 `json:"version"`
					Scope   string `json:"scope"`
				}
				return writeJSON(out, map[string]any{"service": service{s.Name, s.Version, s.Scope}, "methods": methods, "types": nonNil(types)})
			}
			if m != nil {
				printDescribe(&text, ct, node{kind: nodeMethod, svc: s, m: m})
				return nil
			}
			printDescribe(&text, ct, node{kind: nodeService, svc: s})
			for i := range s.Methods {
				fmt.Fprintln(&text)
				printDescribe(&text, ct, node{kind: nodeMethod, svc: s, m: &s.Methods[i]})
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (see above)")
	return exitsOnSIGTERM(cmd)
}

// lookupMethod resolves "Service", "Service@v", "Service.method" or
// "Service@v.method"; m is nil for a service.
func lookupMethod(ct *contract.Contract, name string) (*contract.Service, *contract.Method, error) {
	svcName, mName, hasMethod := strings.Cut(name, ".")
	s := lookupService(ct, svcName)
	if s == nil {
		return nil, nil, callError(status.Errorf(status.NotFound, "no service %s (services: %s)", svcName, serviceList(ct)))
	}
	if !hasMethod {
		return s, nil, nil
	}
	m := s.Method(mName)
	if m == nil {
		return nil, nil, callError(status.Errorf(status.NotFound, "no method %s in %s (methods: %s)", mName, s.Name, methodList(s)))
	}
	return s, m, nil
}

// appendTypes appends the definition of typeName and of every type it
// uses, each once.
func appendTypes(out []contract.TypeDef, ct *contract.Contract, typeName string, seen map[string]bool) []contract.TypeDef {
	if seen[typeName] {
		return out
	}
	seen[typeName] = true
	def := ct.Type(typeName)
	if def == nil {
		return out
	}
	out = append(out, *def)
	for _, f := range def.Fields {
		for _, r := range appendRefs(nil, f.Type) {
			out = appendTypes(out, ct, r, seen)
		}
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// Completion. The generated scripts ("aster completion bash|zsh|fish")
// call "aster __complete ..."; the functions below answer service and
// method names from the contract cache (see cache.go) without connecting.

// completionTarget returns the target the arguments so far name (or
// ASTER_ENDPOINT_ADDR) and how many of them it took.
func completionTarget(args []string) (string, int) {
	if len(args) > 0 && looksLikeTarget(args[0]) {
		return args[0], 1
	}
	return os.Getenv("ASTER_ENDPOINT_ADDR"), 0
}

// completeServiceArg completes the argument after the target: service
// names, and with methods "Service.method" names.
func completeServiceArg(methods bool) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		target, used := completionTarget(args)
		if target == "" || len(args) != used {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		dir := cobra.ShellCompDirectiveNoFileComp
		if methods && !strings.Contains(toComplete, ".") {
			dir |= cobra.ShellCompDirectiveNoSpace // "Service." goes on with a method
		}
		return contractNames(target, methods, toComplete), dir
	}
}

// completeCallArgs completes "aster call [addr] <Service.method>".
func completeCallArgs(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	target, used := completionTarget(args)
	if target == "" || len(args) != used {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := contractNames(target, true, toComplete)
	dir := cobra.ShellCompDirectiveNoFileComp
	if !strings.Contains(toComplete, ".") {
		dir |= cobra.ShellCompDirectiveNoSpace // "Service." goes on with a method
	}
	return names, dir
}

// contractNames lists the cached contract's names that start with prefix:
// "Service." (methods) or "Service" for a prefix without a dot, and
// "Service.method" after the dot.
func contractNames(target string, methods bool, prefix string) []string {
	ct := cachedContract(target)
	if ct == nil {
		return nil
	}
	var out []string
	svcPart, _, afterDot := strings.Cut(prefix, ".")
	for i := range ct.Services {
		s := &ct.Services[i]
		seg := serviceSegment(ct, s)
		if !completable(seg) {
			continue
		}
		if !methods || !afterDot {
			if strings.HasPrefix(seg, prefix) {
				if methods {
					out = append(out, seg+".")
				} else {
					out = append(out, seg)
				}
			}
			continue
		}
		if seg != svcPart {
			continue
		}
		for _, m := range s.Methods {
			if full := seg + "." + m.Name; completable(m.Name) && strings.HasPrefix(full, prefix) {
				out = append(out, full)
			}
		}
	}
	return out
}

// completable reports whether a name from a (possibly hostile) server's
// contract is safe to hand to a shell's completion: no white space, quotes,
// control characters or shell metacharacters.
func completable(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("\"'`$;&|<>(){}*?![]#~\\", r) {
			return false
		}
	}
	return true
}

// completeSessionServices completes --session with the session-scoped
// services of the cached contract.
func completeSessionServices(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	target, _ := completionTarget(args)
	ct := cachedContract(target)
	if ct == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for i := range ct.Services {
		s := &ct.Services[i]
		if seg := serviceSegment(ct, s); s.Scope == "session" && completable(seg) && strings.HasPrefix(seg, toComplete) {
			out = append(out, seg)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
