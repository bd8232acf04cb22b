package main

import (
	"slices"
	"strings"

	"github.com/aster-go/aster/contract"
)

// shellCommands are the shell's own commands, for completion.
var shellCommands = []string{"cd", "describe", "end", "exit", "help", "invoke", "ls", "pwd", "quit", "refresh", "session"}

// complete is the shell's tab completion (a liner.WordCompleter): it
// completes commands, paths, method names and request field names.
func (sh *shell) complete(line string, pos int) (head string, completions []string, tail string) {
	if pos > len(line) {
		pos = len(line)
	}
	var sessSvc *contract.Service
	if sh.sess != nil {
		sessSvc = sh.sess.svc
	}
	start, list := completeAt(sh.ct, sh.cwd, sessSvc, line[:pos])
	return line[:start], list, line[pos:]
}

// completeAt returns the completions for the last word of before (the line
// up to the cursor) and the offset where that word starts. sess is the
// session's service inside a session subshell, else nil.
func completeAt(ct *contract.Contract, cwd string, sess *contract.Service, before string) (int, []string) {
	words, _ := splitWords(before)
	// The word under the cursor: the last one, unless the line ends with
	// white space (a new, empty word).
	cur := shellWord{start: len(before)}
	if n := len(words); n > 0 && !strings.HasSuffix(before, " ") && !strings.HasSuffix(before, "\t") {
		cur = words[n-1]
		words = words[:n-1]
	}
	raw := before[cur.start:] // as typed, quotes included
	if strings.ContainsAny(raw, `'"\`) {
		return cur.start, nil // no completion inside quotes
	}
	prefix := cur.text

	var list []string
	if len(words) == 0 {
		// First word: commands, methods of the current service, paths.
		if !strings.Contains(prefix, "/") {
			for _, c := range shellCommands {
				list = append(list, c+" ")
			}
			if svc := currentService(ct, cwd, sess); svc != nil {
				for _, m := range svc.Methods {
					list = append(list, m.Name+" ")
				}
			}
		}
		if strings.Contains(prefix, "/") || strings.HasPrefix(prefix, ".") {
			list = append(list, completePath(ct, cwd, prefix, true)...)
		}
		return cur.start, filterPrefix(list, prefix)
	}

	switch cmd := words[0].text; cmd {
	case "cd":
		if len(words) == 1 {
			list = completePath(ct, cwd, prefix, false)
			list = slices.DeleteFunc(list, func(s string) bool { return !strings.HasSuffix(s, "/") })
		}
	case "ls", "describe", "desc":
		if len(words) == 1 {
			list = completePath(ct, cwd, prefix, true)
			if sess != nil && !strings.Contains(prefix, "/") {
				for _, m := range sess.Methods {
					list = append(list, m.Name+" ")
				}
			}
		}
	case "session":
		if len(words) == 1 {
			for i := range ct.Services {
				if s := &ct.Services[i]; s.Scope == "session" {
					list = append(list, serviceSegment(ct, s))
				}
			}
		}
	case "invoke", "call":
		if len(words) == 1 {
			if svc := currentService(ct, cwd, sess); svc != nil && !strings.Contains(prefix, "/") {
				for _, m := range svc.Methods {
					list = append(list, m.Name+" ")
				}
			}
			if !strings.Contains(prefix, "/") {
				for i := range ct.Services {
					s := &ct.Services[i]
					for _, m := range s.Methods {
						list = append(list, serviceSegment(ct, s)+"."+m.Name+" ")
					}
				}
			} else {
				list = completePath(ct, cwd, prefix, true)
			}
		} else if m := methodFor(ct, cwd, sess, words[1].text); m != nil {
			list = completeFields(ct, m.Request, prefix)
		}
	default:
		if m := methodFor(ct, cwd, sess, cmd); m != nil {
			list = completeFields(ct, m.Request, prefix)
		}
	}
	return cur.start, filterPrefix(list, prefix)
}

// currentService is the service whose methods bare names refer to.
func currentService(ct *contract.Contract, cwd string, sess *contract.Service) *contract.Service {
	if sess != nil {
		return sess
	}
	if n, err := resolvePath(ct, "/", cwd); err == nil && n.kind == nodeService {
		return n.svc
	}
	return nil
}

// methodFor resolves a word naming a method (bare, ./m, a path or
// Service.method), or returns nil.
func methodFor(ct *contract.Contract, cwd string, sess *contract.Service, word string) *contract.Method {
	if svc := currentService(ct, cwd, sess); svc != nil && !strings.Contains(word, "/") {
		if m := svc.Method(word); m != nil {
			return m
		}
	}
	if n, err := resolvePath(ct, cwd, word); err == nil && n.kind == nodeMethod {
		return n.m
	}
	if i := strings.LastIndexByte(word, '.'); i > 0 && !strings.Contains(word, "/") {
		if svc := lookupService(ct, word[:i]); svc != nil {
			return svc.Method(word[i+1:])
		}
	}
	return nil
}

// completePath completes a path word: the entries of its directory part,
// with the directory part kept ("services/Mi" → "services/MissionControl/").
func completePath(ct *contract.Contract, cwd, word string, methods bool) []string {
	dir, base := "", word
	if i := strings.LastIndexByte(word, '/'); i >= 0 {
		dir, base = word[:i+1], word[i+1:]
	}
	target := dir
	if target == "" {
		target = "."
	}
	n, err := resolvePath(ct, cwd, target)
	if err != nil {
		return nil
	}
	var out []string
	for _, c := range children(ct, n) {
		if !methods && !strings.HasSuffix(c, "/") {
			continue
		}
		if strings.HasPrefix(c, base) {
			if !strings.HasSuffix(c, "/") {
				c += " "
			}
			out = append(out, dir+c)
		}
	}
	if (base == "." || base == "..") && n.kind != nodeRoot {
		out = append(out, dir+base+"/")
	}
	return out
}

// completeFields completes "field=" names of a request type; a word with
// "=" already gets nothing, except true/false for bool fields.
func completeFields(ct *contract.Contract, typeName, word string) []string {
	def := ct.Type(typeName)
	if def == nil {
		return nil
	}
	if k, _, ok := strings.Cut(word, "="); ok {
		if f := findField(def, k); f != nil && f.Type.Kind == contract.KindBool {
			return []string{k + "=true ", k + "=false "}
		}
		return nil
	}
	var out []string
	for _, f := range def.Fields {
		out = append(out, f.Name+"=")
	}
	return out
}

// filterPrefix keeps the candidates that start with prefix, sorted and
// without duplicates.
func filterPrefix(list []string, prefix string) []string {
	var out []string
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
