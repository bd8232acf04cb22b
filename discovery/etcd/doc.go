// Package etcd is aster's etcd backend for discovery: a Registry that is
// both a discovery.Registry (servers announce themselves as producers of a
// service name) and a discovery.Source (clients watch a name's producers).
// It is what "etcd:///fleet/MissionControl" targets resolve through.
//
// # Key layout
//
// A producer of name is one key:
//
//	<Prefix><name>/<endpoint id>
//
// Prefix is Config.Prefix (default "/aster/"), name is the service name
// ("fleet/MissionControl": "/"-separated, non-empty segments, no "." or
// "..", at most MaxNameLen bytes; see ValidateName), and the endpoint id is
// the 64 lower-case hex characters of the producer's ed25519 public key.
// A watch of name reads every key directly under "<Prefix><name>/"; keys of
// deeper names ("<Prefix><name>/<sub>/…") are not its entries.
//
// # Value format
//
// The value is a JSON object:
//
//	{"addr":"aster1…","credential":"<base64>"}
//
// addr is the producer's aster1 address (see discovery.ParseAddress), whose
// id must be the one in the key. credential, present only when the producer
// has one, is the standard base64 (with padding) of its enrollment
// credential as enroll.Credential.Encode produces it; clients verify it
// (see PROTOCOL.md, "Discovery records"). Unknown fields are ignored. A
// watch ignores, and logs once per revision, entries whose value is over
// MaxValueSize (16 KiB), is not such JSON, has an address that does not
// parse, or whose key does not end in the address's id: whoever can write
// to etcd can list addresses, but a client still only talks to the endpoint
// that proves the key, and only trusts a producer whose credential verifies.
//
// # Leases and TTL
//
// Register puts the entry with a lease of Config.TTL (default 5 s, rounded
// up to whole seconds) and renews it while the registration lasts. If the
// process dies the entry disappears when the lease expires, about TTL
// later; Deregister removes it at once. If the lease is lost while the
// process lives (etcd restarted without it, or was unreachable for longer
// than the TTL), Register's goroutine grants a new lease and puts the entry
// again, with backoff, and logs it. The Registration is a
// discovery.RegistrationUpdater: Update puts a new value (a producer whose
// address changed) on the same key under the same lease, only while the
// key still carries that lease, and a lease granted anew later carries the
// updated value.
//
// A watch reads the current entries, then follows etcd's change stream from
// that revision: a new producer is seen within one round trip. If etcd goes
// away the watch keeps the last set it knew (it never reports an empty set
// because etcd is unreachable) and resumes when etcd is back, reading
// everything again if the revisions it missed were compacted.
package etcd
