package dns

// One resolution of a name: the SRV query, then the TXT (and for the id=
// form A and AAAA) queries of its targets.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
	mdns "github.com/miekg/dns"
)

// answer is the outcome of one query that got a response.
type answer struct {
	rrs      []mdns.RR // records of the asked type at the name (CNAMEs followed)
	ttl      uint32    // the smallest TTL involved (negative TTL when empty)
	nxdomain bool
}

// srvKey names one SRV record's target and port.
type srvKey struct {
	target string // fully qualified, lower case
	port   uint16
}

func (k srvKey) String() string {
	return net.JoinHostPort(strings.TrimSuffix(k.target, "."), fmt.Sprint(k.port))
}

// targetResult is what one SRV target yielded.
type targetResult struct {
	producer discovery.Producer
	ok       bool   // producer is usable
	ignored  string // why not, when !ok
	ttl      uint32
}

// result is one successful resolution of a name.
type result struct {
	producers  []discovery.Producer // sorted by id
	ttl        uint32               // smallest TTL of the records involved
	nxdomain   bool                 // the name does not exist
	incomplete bool                 // some target lookups failed: ask again soon
	targets    map[srvKey]targetResult
	notes      map[string]string // target (or "") → why it was ignored
}

// resolveBudget bounds one whole resolution, in units of Timeout: the SRV
// query (UDP then TCP) and the target queries after it.
const resolveBudget = 5

// resolve resolves fqdn once. prev, the previous result or nil, supplies the
// producers of targets whose lookups fail this time. It fails only when the
// SRV query itself does not get an answer.
func (r *Resolver) resolve(ctx context.Context, fqdn string, prev *result) (*result, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveBudget*r.timeout)
	defer cancel()
	ans, err := r.query(ctx, fqdn, mdns.TypeSRV)
	if err != nil {
		return nil, err
	}
	res := &result{ttl: ans.ttl, nxdomain: ans.nxdomain, targets: map[srvKey]targetResult{}, notes: map[string]string{}}
	if ans.nxdomain {
		return res, nil
	}

	// The SRV records, lowest priority first, one per target and port.
	type srv struct {
		prio uint16
		key  srvKey
	}
	var srvs []srv
	seen := map[srvKey]bool{}
	for _, rr := range ans.rrs {
		s := rr.(*mdns.SRV)
		if s.Target == "." {
			continue // "decidedly not available" (RFC 2782)
		}
		t, err := checkName(s.Target)
		if err != nil {
			res.notes[s.Target] = fmt.Sprintf("bad SRV target: %v", err)
			continue
		}
		if s.Port == 0 {
			res.notes[t] = "SRV port 0"
			continue
		}
		k := srvKey{t, s.Port}
		if !seen[k] {
			seen[k] = true
			srvs = append(srvs, srv{s.Priority, k})
		}
	}
	slices.SortFunc(srvs, func(a, b srv) int {
		return cmp.Or(cmp.Compare(a.prio, b.prio), cmp.Compare(a.key.target, b.key.target), cmp.Compare(a.key.port, b.key.port))
	})
	if len(srvs) > MaxProducers {
		res.notes[""] = fmt.Sprintf("%d SRV records, only the first %d (by priority, target, port) are used", len(srvs), MaxProducers)
		srvs = srvs[:MaxProducers]
	}

	// The lowest priority group with at least one usable producer.
	for len(srvs) > 0 {
		n := 1
		for n < len(srvs) && srvs[n].prio == srvs[0].prio {
			n++
		}
		group := make([]srvKey, n)
		for i := range group {
			group[i] = srvs[i].key
		}
		srvs = srvs[n:]
		r.lookupTargets(ctx, group, prev, res)
		ids := map[trust.EndpointID]bool{}
		for _, k := range group {
			tr := res.targets[k]
			if !tr.ok {
				continue
			}
			if ids[tr.producer.Addr.ID] {
				res.notes[k.String()] = fmt.Sprintf("id %s is also at another target", tr.producer.Addr.ID.Short())
				continue
			}
			ids[tr.producer.Addr.ID] = true
			res.producers = append(res.producers, tr.producer)
		}
		if len(res.producers) > 0 {
			break
		}
	}
	slices.SortFunc(res.producers, func(a, b discovery.Producer) int {
		return cmp.Or(strings.Compare(string(a.Addr.ID[:]), string(b.Addr.ID[:])), strings.Compare(a.Addr.String(), b.Addr.String()))
	})
	return res, nil
}

// lookupTargets looks up the targets of one priority group, parallelism at
// a time, and records each one's outcome (and TTL) in res.
func (r *Resolver) lookupTargets(ctx context.Context, group []srvKey, prev *result, res *result) {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, parallelism)
	)
	for _, k := range group {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			tr, err := r.lookupTarget(ctx, k)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.incomplete = true
				if p, ok := prev.target(k); ok && p.ok {
					tr = p // keep what this target was
					res.notes[k.String()] = fmt.Sprintf("lookup failed, keeping its last producer: %v", err)
				} else {
					tr = targetResult{ignored: fmt.Sprintf("lookup failed: %v", err)}
				}
			} else {
				res.ttl = min(res.ttl, tr.ttl)
			}
			if !tr.ok {
				res.notes[k.String()] = tr.ignored
			}
			res.targets[k] = tr
		}()
	}
	wg.Wait()
}

func (p *result) target(k srvKey) (targetResult, bool) {
	if p == nil {
		return targetResult{}, false
	}
	tr, ok := p.targets[k]
	return tr, ok
}

// lookupTarget reads the TXT records of one SRV target and, for the id=
// form, its A and AAAA records. An error means a query got no answer; a
// target that answered but does not describe a usable producer is returned
// with ok false and the reason.
func (r *Resolver) lookupTarget(ctx context.Context, k srvKey) (targetResult, error) {
	ans, err := r.query(ctx, k.target, mdns.TypeTXT)
	if err != nil {
		return targetResult{}, err
	}
	tr := targetResult{ttl: ans.ttl}
	if len(ans.rrs) == 0 {
		tr.ignored = "no TXT records"
		if ans.nxdomain {
			tr.ignored = "no such name (NXDOMAIN)"
		}
		return tr, nil
	}
	txts := make([]*mdns.TXT, len(ans.rrs))
	for i, rr := range ans.rrs {
		txts[i] = rr.(*mdns.TXT)
	}
	f, err := parseTXT(txts)
	if err != nil {
		tr.ignored = err.Error()
		return tr, nil
	}
	ea, err := f.endpoint()
	if err != nil {
		tr.ignored = err.Error()
		return tr, nil
	}
	cred, err := f.credential()
	if err != nil {
		tr.ignored = err.Error()
		return tr, nil
	}
	if !f.haveAddr {
		// The id= form: the direct addresses are the target's A and AAAA
		// records with the SRV port.
		var addrs []netip.Addr
		for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
			a, err := r.query(ctx, k.target, qt)
			if err != nil {
				return targetResult{}, err
			}
			tr.ttl = min(tr.ttl, a.ttl)
			for _, rr := range a.rrs {
				var ip net.IP
				switch rr := rr.(type) {
				case *mdns.A:
					ip = rr.A
				case *mdns.AAAA:
					ip = rr.AAAA
				}
				if ip, ok := netip.AddrFromSlice(ip); ok {
					ip = ip.Unmap()
					if ip.IsValid() && !ip.IsUnspecified() && !ip.IsMulticast() && !slices.Contains(addrs, ip) {
						addrs = append(addrs, ip)
					}
				}
			}
		}
		if len(addrs) == 0 {
			tr.ignored = "id= form but no A or AAAA records"
			return tr, nil
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		if len(addrs) > discovery.MaxDirectAddrs {
			addrs = addrs[:discovery.MaxDirectAddrs]
		}
		for _, a := range addrs {
			ea.Direct = append(ea.Direct, netip.AddrPortFrom(a, k.port))
		}
	}
	tr.producer = discovery.Producer{Addr: ea, Credential: cred}
	tr.ok = true
	return tr, nil
}

// query asks the server for the records of type qtype at name, over UDP and,
// when the answer is truncated, again over TCP. A response with a bad code
// (SERVFAIL, REFUSED, …) or that does not match the question is an error;
// NXDOMAIN and an empty answer are not.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (answer, error) {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(udpSize, false)
	qs := fmt.Sprintf("%s %s", strings.TrimSuffix(name, "."), mdns.TypeToString[qtype])
	resp, err := r.exchange(ctx, m, "udp")
	if err == nil && resp.Truncated {
		resp, err = r.exchange(ctx, m, "tcp")
	}
	if err != nil {
		return answer{}, r.queryError(ctx, qs, err)
	}
	if len(resp.Question) != 1 || resp.Question[0].Qtype != qtype || !strings.EqualFold(resp.Question[0].Name, name) {
		return answer{}, status.Errorf(status.Unavailable, "%s: the response from %s does not match the question", qs, r.server)
	}
	switch resp.Rcode {
	case mdns.RcodeSuccess:
	case mdns.RcodeNameError:
		return answer{nxdomain: true, ttl: negativeTTL(resp)}, nil
	default:
		return answer{}, status.Errorf(status.Unavailable, "%s: %s answered %s", qs, r.server, mdns.RcodeToString[resp.Rcode])
	}
	a := answer{ttl: ^uint32(0)}
	cur := name
	for hop := 0; ; hop++ {
		var cname string
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, cur) {
				continue
			}
			switch {
			case h.Rrtype == qtype:
				a.rrs = append(a.rrs, rr)
				a.ttl = min(a.ttl, h.Ttl)
			case h.Rrtype == mdns.TypeCNAME && cname == "":
				cname = rr.(*mdns.CNAME).Target
				a.ttl = min(a.ttl, h.Ttl)
			}
		}
		if len(a.rrs) > 0 || cname == "" {
			break
		}
		if hop == maxCNAMEHops {
			return answer{}, status.Errorf(status.Unavailable, "%s: more than %d CNAMEs", qs, maxCNAMEHops)
		}
		cur = cname
	}
	if len(a.rrs) == 0 {
		a.ttl = negativeTTL(resp)
	}
	return a, nil
}

// negativeTTL is how long a negative answer may be cached: the smaller of
// the SOA record's TTL and its minimum field (RFC 2308), or 0 when the
// response has no SOA.
func negativeTTL(resp *mdns.Msg) uint32 {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*mdns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl)
		}
	}
	return 0
}

// queryError turns a failed exchange into an Unavailable error saying what
// happened (or the context's error if the caller gave up).
func (r *Resolver) queryError(ctx context.Context, qs string, err error) error {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", qs, ctx.Err())
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return status.Errorf(status.Unavailable, "%s: no answer from %s within %v: %w", qs, r.server, r.timeout, err)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return status.Errorf(status.Unavailable, "%s: server %s refused the connection (is a DNS server listening there?): %w", qs, r.server, err)
	}
	return status.Errorf(status.Unavailable, "%s: asking %s: %w", qs, r.server, err)
}

// aLongTimeAgo is a deadline in the past, to interrupt a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// exchange sends m over network ("udp" or "tcp") on a fresh connection (a
// fresh source port and id per query) and returns the response with m's id,
// within Timeout and ctx.
func (r *Resolver) exchange(ctx context.Context, m *mdns.Msg, network string) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m.Id = mdns.Id()
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, r.server)
	if err != nil {
		return nil, err
	}
	co := &mdns.Conn{Conn: nc, UDPSize: udpReadSize}
	defer co.Close()
	dl, _ := ctx.Deadline()
	if err := nc.SetDeadline(dl); err != nil {
		return nil, err
	}
	// Close (or the caller giving up) interrupts a blocked read at once.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
	defer stop()
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		resp, err := co.ReadMsg()
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			return nil, err
		}
		if resp.Id == m.Id {
			return resp, nil
		}
		if network == "tcp" {
			return nil, mdns.ErrId
		}
		// A late answer to an earlier query, or a spoofing attempt: wait
		// for ours until the deadline.
	}
}
