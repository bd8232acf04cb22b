// Package dns is the DNS backend of discovery: a discovery.Source that
// follows the producers of a service through SRV and TXT records, such as
// ExternalDNS publishes for a Kubernetes headless Service, or Consul DNS
// answers.
//
//	r, err := dns.New(dns.Config{})              // the nameserver of /etc/resolv.conf
//	w, err := r.Watch(ctx, "_mc._udp.example.internal")
//	for {
//		ps, err := w.Next(ctx)                   // the set, then each change
//		...
//	}
//
// # Records
//
// The watched name is an SRV name, such as "_mc._udp.example.internal".
// Each of its SRV records names one producer: a target host and a port
// (RFC 2782). At each target name, TXT records say who the producer is.
// Each TXT record is one "key=value" string; a record longer than 255 bytes
// is split into several character-strings of that one record (in a zone
// file: several quoted strings on one line), which are concatenated. The
// keys:
//
//	addr=aster1…   the producer's full address (discovery.ParseAddress);
//	               the SRV target and port are then only a hint and are
//	               not resolved.
//	id=<64 hex>    the producer's endpoint id; its direct addresses are
//	               then the target's A and AAAA records with the SRV port
//	               (at most discovery.MaxDirectAddrs, lowest first).
//	cred=<base64>  optional: the producer's enrollment credential as
//	               enroll.Credential.Encode gives it, in standard base64
//	               (padding optional).
//
// One of addr= and id= is mandatory: the registry says where to look, the
// key says whom to trust (a client verifies the id on every connection, and
// the credential when it requires one). A target with neither, with a bad
// value, with two different values for one key, with a TXT record over
// MaxTXTLen bytes or more than MaxTXTRecords TXT records, or (id= form)
// without A or AAAA records, is ignored and logged once. Unknown keys and
// TXT records without "=" are skipped, so ownership records (ExternalDNS's
// "heritage=…") and other users of the name do not get in the way. When
// both addr= and id= are given they must name the same endpoint.
//
// Zone-file example (mc-0 in the id= form with a credential split in two
// strings, mc-1 in the addr= form, mc-dr a backup):
//
//	$ORIGIN example.internal.
//	$TTL 30
//	_mc._udp  IN SRV  0 0 7000 mc-0.mc
//	_mc._udp  IN SRV  0 0 7000 mc-1.mc
//	_mc._udp  IN SRV 10 0 7000 mc-dr
//	mc-0.mc   IN A    10.1.0.17
//	mc-0.mc   IN AAAA fd00::17
//	mc-0.mc   IN TXT  "id=e2dce754a9e70f00d848b19b524760c38e466bca2d2cdab9f344aa0b8689ca08"
//	mc-0.mc   IN TXT  "cred=AAECAwQFBgcI" "CQoLDA0ODw=="
//	mc-1.mc   IN TXT  "addr=aster12myK31Y2a8SMWNNTBE6spY7nThBRV1qVYxDavK9BMLq2MAAnUeNcszGQXW1RJ"
//	mc-dr     IN A    10.2.0.5
//	mc-dr     IN TXT  "id=53a7e2842cb1f23232ce0b7e786be2b475c515135190242569c71fe3ee42b204"
//
// Watching "_mc._udp.example.internal" gives two producers: e2dc… at
// 10.1.0.17:7000 and [fd00::17]:7000 with the 16-byte credential 00 01 …
// 0f, and 3cb3… at the address of its addr= record (10.1.0.18:7000).
//
// # Priorities and weights
//
// Only the lowest-numbered SRV priority group that yields at least one
// usable producer is used; higher-numbered groups are backups, used when
// every target of the lower groups is ignored (RFC 2782 semantics; above,
// mc-dr is used only when neither mc-0 nor mc-1 is usable). Health is the
// publisher's business: CoreDNS and ExternalDNS publish ready pods only,
// Consul healthy instances only, and with the id= form a target whose A
// records are withdrawn drops out on its own. Weights are ignored: the
// client balances by load. Targets "." (service not available) and port 0
// are skipped; one endpoint id at several targets is kept once (the first
// target in name, port order). At most
// MaxProducers SRV records are used, the first in (priority, target, port)
// order.
//
// # Re-resolution
//
// A watch asks again when the smallest TTL of the records it used runs out
// (SRV, TXT, A, AAAA, or the negative TTL of an empty answer: the SOA
// record's, 0 without one), clamped to
// [Config.MinInterval, Config.MaxInterval]; ResolveNow asks at once, but
// never sooner than MinInterval after the previous resolution. Next reports
// a set only when it changed. After the first success a failed resolution
// (timeout, SERVFAIL, server unreachable) keeps the last set, is logged, and
// is retried after MinInterval, doubling up to MaxInterval; a target whose
// own queries fail keeps its last producer and the name is asked again after
// MinInterval. An NXDOMAIN or empty answer for the SRV name after the start
// is an answer, not a failure: the set becomes empty. At the start, Watch
// fails instead: NotFound for NXDOMAIN, Unavailable for a server that does
// not answer within Config.Timeout.
//
// Each query goes over UDP from a fresh socket with a fresh id, advertising
// a 1232-byte EDNS0 buffer; a truncated answer is asked again over TCP. One
// resolution takes at most 5×Timeout; its target queries run 16 at a time.
// Names are checked (at most 253 bytes, labels of letters, digits, '-' and
// '_'), CNAME chains in an answer are followed at most 8 hops, and records
// at other names are ignored.
//
// # Kubernetes
//
// A StatefulSet gives each producer a stable name and its own identity; a
// headless Service gives the names DNS records; ExternalDNS (with its CRD
// source) publishes the SRV and TXT records, which CoreDNS's kubernetes
// plugin alone cannot serve. The A records follow pod readiness, so with the
// id= form a pod that is not ready drops out of the set by itself.
//
//	apiVersion: v1
//	kind: Service
//	metadata:
//	  name: mc
//	  namespace: prod
//	  annotations:
//	    # ExternalDNS publishes mc-0.mc.example.internal A <pod IP> for each
//	    # pod in the Service's endpoints (ready pods): StatefulSet pods have
//	    # spec.hostname set.
//	    external-dns.alpha.kubernetes.io/hostname: mc.example.internal
//	    external-dns.alpha.kubernetes.io/ttl: "30"
//	spec:
//	  clusterIP: None            # headless: per-pod records
//	  selector: {app: mc}
//	  ports:
//	  - name: mc
//	    protocol: UDP
//	    port: 7000
//	---
//	apiVersion: apps/v1
//	kind: StatefulSet
//	metadata: {name: mc, namespace: prod}
//	spec:
//	  serviceName: mc            # pods are mc-0, mc-1, … with hostname set
//	  replicas: 2
//	  selector: {matchLabels: {app: mc}}
//	  template:
//	    metadata: {labels: {app: mc}}
//	    spec:
//	      containers:
//	      - name: mc
//	        image: example.internal/mc:1.4
//	        # Each pod loads its own identity (key and credential) by pod name.
//	        args: ["--identity", "/identity/$(POD_NAME).aster-identity", "--listen", "0.0.0.0:7000"]
//	        env:
//	        - name: POD_NAME
//	          valueFrom: {fieldRef: {fieldPath: metadata.name}}
//	        ports: [{name: mc, containerPort: 7000, protocol: UDP}]
//	        volumeMounts: [{name: identity, mountPath: /identity, readOnly: true}]
//	      volumes:
//	      - name: identity
//	        secret: {secretName: mc-identities}   # keys mc-0.aster-identity, mc-1.aster-identity
//	---
//	# Written when the identities are created (aster trust / aster enroll),
//	# from each pod's endpoint id and credential.
//	apiVersion: externaldns.k8s.io/v1alpha1
//	kind: DNSEndpoint
//	metadata: {name: mc-aster, namespace: prod}
//	spec:
//	  endpoints:
//	  - dnsName: _mc._udp.example.internal
//	    recordType: SRV
//	    recordTTL: 30
//	    targets: ["0 0 7000 mc-0.mc.example.internal", "0 0 7000 mc-1.mc.example.internal"]
//	  - dnsName: mc-0.mc.example.internal
//	    recordType: TXT
//	    recordTTL: 30
//	    targets: ["id=<mc-0's endpoint id>", "cred=<mc-0's credential, base64>"]
//	  - dnsName: mc-1.mc.example.internal
//	    recordType: TXT
//	    recordTTL: 30
//	    targets: ["id=<mc-1's endpoint id>", "cred=<mc-1's credential, base64>"]
//
// ExternalDNS then runs with --source=service --source=crd
// --managed-record-types=A --managed-record-types=AAAA
// --managed-record-types=SRV --managed-record-types=TXT. Its own ownership
// TXT records ("heritage=external-dns,…"), where they share a producer's
// name, are skipped as an unknown key; --txt-prefix keeps them off those
// names altogether. Clients use the target
// "dns:///_mc._udp.example.internal".
//
// # Consul
//
// Consul DNS answers SRV queries for "_mc._udp.service.consul" (RFC 2782
// form) or "mc.service.consul" with the healthy instances, whose targets
// are "<node>.node.<dc>.consul", and answers TXT queries at a node name
// with the node's metadata as "key=value" records. So node metadata
// id=<endpoint id> (and cred=…, within Consul's limit on metadata values)
// makes each node one producer in the id= form, at its A records and the
// service port. An instance whose service address differs from its node's
// gets an "<hex address>.addr.<dc>.consul" target, which has no TXT
// records, and is ignored (and logged).
package dns
