package main

import (
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/trust"
)

// The shell's virtual tree:
//
//	/                          root
//	/services                  one directory per service
//	/services/<Service>        one entry per method (the highest version)
//	/services/<Service>@<v>    a specific version, when the server has several
//	/services/<Service>/<m>    a method (a leaf: call it, describe it)

// nodeKind is what a path names.
type nodeKind int

const (
	nodeRoot nodeKind = iota
	nodeServices
	nodeService
	nodeMethod
)

// node is a resolved path.
type node struct {
	kind nodeKind
	svc  *contract.Service
	m    *contract.Method
}

// pathOf returns the canonical path of a node.
func (n node) path(ct *contract.Contract) string {
	switch n.kind {
	case nodeServices:
		return "/services"
	case nodeService:
		return "/services/" + serviceSegment(ct, n.svc)
	case nodeMethod:
		return "/services/" + serviceSegment(ct, n.svc) + "/" + n.m.Name
	}
	return "/"
}

// serviceSegment names a service in paths: its name, or name@version when
// it is not the highest version the server has.
func serviceSegment(ct *contract.Contract, s *contract.Service) string {
	if hi := ct.Service(s.Name, 0); hi != nil && hi.Version != s.Version {
		return s.Name + "@" + strconv.FormatUint(uint64(s.Version), 10)
	}
	return s.Name
}

// lookupService resolves a path segment "Name" or "Name@v".
func lookupService(ct *contract.Contract, seg string) *contract.Service {
	name, ver, ok := strings.Cut(seg, "@")
	if !ok {
		return ct.Service(seg, 0)
	}
	v, err := strconv.ParseUint(ver, 10, 32)
	if err != nil || v == 0 {
		return nil
	}
	return ct.Service(name, uint32(v))
}

// resolvePath resolves p relative to the directory cwd (a canonical path).
func resolvePath(ct *contract.Contract, cwd, p string) (node, error) {
	full := p
	if !strings.HasPrefix(p, "/") {
		full = cwd + "/" + p
	}
	full = path.Clean(full)
	segs := strings.Split(strings.TrimPrefix(full, "/"), "/")
	if full == "/" {
		return node{kind: nodeRoot}, nil
	}
	if segs[0] != "services" {
		return node{}, fmt.Errorf("no such path %s (the tree is /services/<Service>/<method>)", full)
	}
	if len(segs) == 1 {
		return node{kind: nodeServices}, nil
	}
	svc := lookupService(ct, segs[1])
	if svc == nil {
		return node{}, fmt.Errorf("no service %s (services: %s)", segs[1], serviceList(ct))
	}
	if len(segs) == 2 {
		return node{kind: nodeService, svc: svc}, nil
	}
	m := svc.Method(segs[2])
	if m == nil {
		return node{}, fmt.Errorf("no method %s in %s (methods: %s)", segs[2], svc.Name, methodList(svc))
	}
	if len(segs) > 3 {
		return node{}, fmt.Errorf("no such path %s: %s.%s is a method", full, svc.Name, m.Name)
	}
	return node{kind: nodeMethod, svc: svc, m: m}, nil
}

func serviceList(ct *contract.Contract) string {
	var names []string
	for i := range ct.Services {
		names = append(names, serviceSegment(ct, &ct.Services[i]))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func methodList(s *contract.Service) string {
	var names []string
	for _, m := range s.Methods {
		names = append(names, m.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// children lists the entries of a directory node: names, with a trailing
// "/" for directories.
func children(ct *contract.Contract, n node) []string {
	switch n.kind {
	case nodeRoot:
		return []string{"services/"}
	case nodeServices:
		var out []string
		for i := range ct.Services {
			out = append(out, serviceSegment(ct, &ct.Services[i])+"/")
		}
		slices.Sort(out)
		return out
	case nodeService:
		var out []string
		for _, m := range n.svc.Methods {
			out = append(out, m.Name)
		}
		return out
	}
	return nil
}

// requiresString renders a method's capability requirement, "" for none.
func requiresString(e *trust.Expr) string {
	if e == nil {
		return ""
	}
	r, err := e.Requirement()
	if err != nil {
		return "(invalid requirement: " + err.Error() + ")"
	}
	return r.String()
}

// printLs lists a node for "ls".
func printLs(w io.Writer, ct *contract.Contract, n node) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch n.kind {
	case nodeRoot:
		fmt.Fprintf(tw, "services/\t%d services\n", len(ct.Services))
	case nodeServices:
		for i := range ct.Services {
			s := &ct.Services[i]
			fmt.Fprintf(tw, "%s/\tv%d\t%s\t%d methods\n", serviceSegment(ct, s), s.Version, s.Scope, len(s.Methods))
		}
	case nodeService:
		for _, m := range n.svc.Methods {
			fmt.Fprintf(tw, "%s\t%s\t%s → %s%s\n", m.Name, m.Pattern, m.Request, m.Response, methodNotes(&m))
		}
	case nodeMethod:
		m := n.m
		fmt.Fprintf(tw, "%s\t%s\t%s → %s%s\n", m.Name, m.Pattern, m.Request, m.Response, methodNotes(m))
	}
}

func methodNotes(m *contract.Method) string {
	var notes []string
	if r := requiresString(m.Requires); r != "" {
		notes = append(notes, "requires "+r)
	}
	if m.Idempotent {
		notes = append(notes, "idempotent")
	}
	if len(notes) == 0 {
		return ""
	}
	return "\t[" + strings.Join(notes, ", ") + "]"
}

// printDescribe describes a service or a method: pattern, request and
// response fields with their types, required capabilities.
func printDescribe(w io.Writer, ct *contract.Contract, n node) {
	switch n.kind {
	case nodeRoot, nodeServices:
		for i := range ct.Services {
			if i > 0 {
				fmt.Fprintln(w)
			}
			printDescribe(w, ct, node{kind: nodeService, svc: &ct.Services[i]})
		}
	case nodeService:
		s := n.svc
		fmt.Fprintf(w, "service %s v%d (%s-scoped, %d methods)\n", s.Name, s.Version, s.Scope, len(s.Methods))
		if s.Scope == "session" {
			fmt.Fprintf(w, "  calls share state only inside 'session %s'\n", s.Name)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, m := range s.Methods {
			fmt.Fprintf(tw, "  %s\t%s\t%s → %s%s\n", m.Name, m.Pattern, m.Request, m.Response, methodNotes(&m))
		}
		tw.Flush()
	case nodeMethod:
		s, m := n.svc, n.m
		fmt.Fprintf(w, "%s.%s  (%s, service v%d, %s-scoped)\n", s.Name, m.Name, m.Pattern, s.Version, s.Scope)
		if r := requiresString(m.Requires); r != "" {
			fmt.Fprintf(w, "  requires:  %s\n", r)
		} else {
			fmt.Fprintf(w, "  requires:  nothing\n")
		}
		if m.Idempotent {
			fmt.Fprintf(w, "  idempotent\n")
		}
		seen := map[string]bool{}
		fmt.Fprintf(w, "  request:   %s%s\n", m.Request, streamNote(m.Pattern, true))
		printFields(w, ct, m.Request, "    ", seen)
		fmt.Fprintf(w, "  response:  %s%s\n", m.Response, streamNote(m.Pattern, false))
		printFields(w, ct, m.Response, "    ", seen)
	}
}

func streamNote(pattern string, request bool) string {
	switch {
	case request && (pattern == "client_stream" || pattern == "bidi_stream"):
		return "  (a stream of them)"
	case !request && (pattern == "server_stream" || pattern == "bidi_stream"):
		return "  (a stream of them)"
	}
	return ""
}

// printFields prints the fields of a type, then nested types once.
func printFields(w io.Writer, ct *contract.Contract, typeName, indent string, seen map[string]bool) {
	def := ct.Type(typeName)
	if def == nil {
		fmt.Fprintf(w, "%s(type not in the contract)\n", indent)
		return
	}
	if len(def.Fields) == 0 {
		fmt.Fprintf(w, "%s(no fields)\n", indent)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var nested []string
	for _, f := range def.Fields {
		fmt.Fprintf(tw, "%s%s\t%s\n", indent, f.Name, f.Type.String())
		nested = appendRefs(nested, f.Type)
	}
	tw.Flush()
	seen[typeName] = true
	for _, r := range nested {
		if seen[r] {
			continue
		}
		seen[r] = true
		fmt.Fprintf(w, "%s%s:\n", indent, r)
		printFields(w, ct, r, indent+"  ", seen)
	}
}

func appendRefs(out []string, t contract.TypeRef) []string {
	switch t.Kind {
	case contract.KindRef:
		return append(out, t.Ref)
	case contract.KindList:
		if t.Elem != nil {
			return appendRefs(out, *t.Elem)
		}
	case contract.KindMap:
		if t.Elem != nil {
			return appendRefs(out, *t.Elem)
		}
	}
	return out
}
