// Package dnstest runs a small authoritative DNS server on loopback for
// tests: real UDP and TCP sockets on one random 127.0.0.1 port, serving the
// records the test sets, and changes, while it runs.
//
//	s := dnstest.Start(t)
//	s.SetZone(t, `
//		_mc._udp.example.internal. 5 IN SRV 0 0 7000 mc-0.example.internal.
//		mc-0.example.internal.     5 IN TXT "id=3b6a…"
//		mc-0.example.internal.     5 IN A   127.0.0.1
//	`)
//	r, _ := dns.New(dns.Config{Server: s.Addr()})
//
// Answers follow the records: the records of the asked type at the asked
// name (case-insensitive), else a CNAME at that name (followed within the
// served records), else NODATA (the name owns other records or is an empty
// non-terminal) or NXDOMAIN, both with an SOA record whose TTL and minimum
// are NegativeTTL (default 5s). Over UDP an answer larger than the client's
// EDNS0 buffer (512 bytes without EDNS0) is truncated with the TC bit, as
// real servers do, so the client must ask again over TCP; over TCP, names
// are compressed and an answer over 64 KiB is truncated too. Queries counts
// what was asked; SetFailure (or SetNameFailure, for one name) makes the
// server drop, SERVFAIL or REFUSE queries; Close takes it off the network.
//
// With testing/synctest, start the server outside the bubble and use it
// inside: its goroutines wait on sockets, which a bubble never sees as
// durably blocked, so a server started inside would keep the fake clock
// from advancing. The resolver under test may run inside; its queries are
// answered in real time while the fake clock waits.
package dnstest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Failure is how the server misbehaves (SetFailure).
type Failure int

const (
	// Answer is normal operation.
	Answer Failure = iota
	// Drop reads queries and never answers (a black hole: clients time out).
	Drop
	// ServFail answers every query with SERVFAIL.
	ServFail
	// Refused answers every query with REFUSED.
	Refused
)

// Query is one query the server received.
type Query struct {
	Name string // as asked, lower case, fully qualified
	Type uint16 // dns.TypeSRV, dns.TypeTXT, …
	Net  string // "udp" or "tcp"
	At   time.Time
}

// Server is a running DNS server. Its methods are safe for concurrent use.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu          sync.Mutex
	records     []dns.RR
	byName      map[string][]dns.RR // records by canonical owner name
	failure     Failure
	nameFailure map[string]Failure
	negativeTTL uint32
	queries     []Query
	closed      bool
}

// Start starts a server on a random 127.0.0.1 port (the same port for UDP
// and TCP) with no records; it is closed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New is Start for code without a testing.TB (examples); the caller must
// Close the server.
func New() (*Server, error) {
	s := &Server{negativeTTL: 5}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("no port free for both UDP and TCP: %w", err)
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	for i, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			if i == 1 {
				s.Close()
			} else {
				pc.Close()
				ln.Close()
			}
			return nil, fmt.Errorf("serving: %w", err)
		}
	}
	return s, nil
}

// Addr returns the server's "127.0.0.1:port", for UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Close stops the server and closes its sockets: queries then meet a closed
// port. It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.udp.ShutdownContext(ctx)
	_ = s.tcp.ShutdownContext(ctx)
}

// Set replaces all the served records with rrs.
func (s *Server) Set(rrs ...dns.RR) {
	cp := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		cp[i] = dns.Copy(rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = cp
	s.indexLocked()
}

// indexLocked rebuilds byName from records.
func (s *Server) indexLocked() {
	s.byName = make(map[string][]dns.RR, len(s.records))
	for _, rr := range s.records {
		n := dns.CanonicalName(rr.Header().Name)
		s.byName[n] = append(s.byName[n], rr)
	}
}

// Add adds rrs to the served records.
func (s *Server) Add(rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		s.records = append(s.records, dns.Copy(rr))
	}
	s.indexLocked()
}

// Remove removes the records of type rrtype at name (every type for
// dns.TypeANY).
func (s *Server) Remove(name string, rrtype uint16) {
	name = dns.CanonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.records[:0]
	for _, rr := range s.records {
		h := rr.Header()
		if dns.CanonicalName(h.Name) == name && (rrtype == dns.TypeANY || h.Rrtype == rrtype) {
			continue
		}
		kept = append(kept, rr)
	}
	clear(s.records[len(kept):])
	s.records = kept
	s.indexLocked()
}

// SetZone replaces all the served records with those of zone, in zone-file
// syntax (names fully qualified, or relative to a $ORIGIN line; a record
// without a TTL takes the previous record's, or 5 for the first). It fails
// the test on a syntax error.
func (s *Server) SetZone(t testing.TB, zone string) {
	t.Helper()
	rrs, err := ParseZone(zone)
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	s.Set(rrs...)
}

// ParseZone parses records in zone-file syntax, as SetZone does.
func ParseZone(zone string) ([]dns.RR, error) {
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "dnstest")
	zp.SetDefaultTTL(5)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("zone: %w", err)
	}
	return rrs, nil
}

// RR parses one record in zone-file syntax and panics on a syntax error
// (for literals in tests).
func RR(s string) dns.RR {
	rr, err := dns.NewRR(s)
	if err != nil || rr == nil {
		panic(fmt.Sprintf("dnstest.RR(%q): %v", s, err))
	}
	return rr
}

// SetFailure changes how the server answers from now on.
func (s *Server) SetFailure(f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failure = f
}

// SetNameFailure changes how the server answers queries for one name
// (any type) from now on; SetFailure, when not Answer, takes precedence.
func (s *Server) SetNameFailure(name string, f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nameFailure == nil {
		s.nameFailure = map[string]Failure{}
	}
	s.nameFailure[dns.CanonicalName(name)] = f
}

// SetNegativeTTL sets the TTL and minimum of the SOA record sent with
// NXDOMAIN and NODATA answers (default 5s), in whole seconds.
func (s *Server) SetNegativeTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.negativeTTL = uint32(d / time.Second)
}

// Queries returns the queries received so far, oldest first.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// Count returns how many queries for name and qtype were received (any
// name when name is "", any type for dns.TypeANY), over either transport.
func (s *Server) Count(name string, qtype uint16) int {
	name = dns.CanonicalName(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, q := range s.queries {
		if (name == "." || q.Name == name) && (qtype == dns.TypeANY || q.Type == qtype) {
			n++
		}
	}
	return n
}

// ResetQueries forgets the queries received so far.
func (s *Server) ResetQueries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = nil
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	s.mu.Lock()
	failure := s.failure
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := dns.CanonicalName(q.Name)
		s.queries = append(s.queries, Query{Name: name, Type: q.Qtype, Net: network, At: time.Now()})
		if f, ok := s.nameFailure[name]; ok && failure == Answer {
			failure = f
		}
	}
	var resp *dns.Msg
	switch {
	case failure == Drop:
		s.mu.Unlock()
		return
	case failure == ServFail || failure == Refused:
		resp = new(dns.Msg)
		code := dns.RcodeServerFailure
		if failure == Refused {
			code = dns.RcodeRefused
		}
		resp.SetRcode(req, code)
	case len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery:
		resp = new(dns.Msg)
		resp.SetRcode(req, dns.RcodeFormatError)
	default:
		resp = s.answerLocked(req)
	}
	s.mu.Unlock()

	// As real servers do: compress names, and truncate what does not fit
	// (over TCP only a message over 64 KiB, which then comes with TC set).
	resp.Compress = true
	size := dns.MaxMsgSize
	if network == "udp" {
		size = dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
	}
	resp.Truncate(size)
	_ = w.WriteMsg(resp)
}

// answerLocked builds the answer to req from the records.
func (s *Server) answerLocked(req *dns.Msg) *dns.Msg {
	q := req.Question[0]
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(opt.UDPSize(), false)
	}
	name := dns.CanonicalName(q.Name)
	for hop := 0; hop < 8; hop++ {
		var cname *dns.CNAME
		found := false
		for _, rr := range s.byName[name] {
			h := rr.Header()
			switch {
			case h.Rrtype == q.Qtype || q.Qtype == dns.TypeANY:
				resp.Answer = append(resp.Answer, dns.Copy(rr))
				found = true
			case h.Rrtype == dns.TypeCNAME:
				cname = rr.(*dns.CNAME)
			}
		}
		if found || cname == nil {
			break
		}
		resp.Answer = append(resp.Answer, dns.Copy(cname))
		name = dns.CanonicalName(cname.Target)
	}
	if len(resp.Answer) == 0 || resp.Answer[len(resp.Answer)-1].Header().Rrtype == dns.TypeCNAME {
		if !s.existsLocked(name) {
			resp.Rcode = dns.RcodeNameError
		}
		resp.Ns = append(resp.Ns, &dns.SOA{
			Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: s.negativeTTL},
			Ns:  "ns.dnstest.", Mbox: "hostmaster.dnstest.", Serial: 1,
			Refresh: 3600, Retry: 600, Expire: 86400, Minttl: s.negativeTTL,
		})
	}
	return resp
}

// existsLocked reports whether name owns records or has names below it.
func (s *Server) existsLocked(name string) bool {
	for n := range s.byName {
		if n == name || strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	return false
}
