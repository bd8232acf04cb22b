// aster.js — a small aster client for browsers, over WebTransport.
//
// It speaks PROTOCOL.md on WebTransport streams: JSON headers and trailers
// and the "json" serialization mode, so it needs no CBOR library. Before any
// call it runs the identity exchange of PROTOCOL.md section 18: it checks
// that the server's ed25519 endpoint key signed the pinned certificate it
// was served, and proves an ephemeral ed25519 key of its own (WebCrypto).
//
//   import { parseAddress, AsterClient } from "./aster.js";
//   const client = await AsterClient.connect(await parseAddress("aster1…"));
//   const st = await client.unary("MissionControl.getStatus", { agent_id: "a" });
//   for await (const e of client.serverStream("MissionControl.tailLogs", {})) { … }
//   client.close();

const FLAG_COMPRESSED = 0x01;
const FLAG_TRAILER = 0x02;
const FLAG_HEADER = 0x04;
const MAX_FRAME = 16 << 20;

const CERT_CONTEXT = "aster/1 webtransport certificate\0";
const PROOF_CONTEXT = "aster/1 webtransport client proof\0";
const IDENTITY_VERSION = 1;

const utf8 = new TextEncoder();
const fromUTF8 = new TextDecoder("utf-8", { fatal: true });

/** An error carrying an aster status code (PROTOCOL.md: 0–16 as gRPC, 100+ application). */
export class AsterError extends Error {
  constructor(code, message, details) {
    super(`aster status ${code}: ${message || ""}`);
    this.code = code;
    this.details = details;
  }
}

function concat(...parts) {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function toHex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function fromHex(s) {
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new Error(`bad hex ${s}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

function base58Decode(s) {
  let n = 0n;
  for (const ch of s) {
    const v = B58.indexOf(ch);
    if (v < 0) throw new Error(`invalid base58 character ${JSON.stringify(ch)}`);
    n = n * 58n + BigInt(v);
  }
  const bytes = [];
  while (n > 0n) {
    bytes.push(Number(n & 0xffn));
    n >>= 8n;
  }
  for (const ch of s) {
    if (ch !== "1") break;
    bytes.push(0);
  }
  return Uint8Array.from(bytes.reverse());
}

/**
 * parseAddress decodes an "aster1…" address (discovery/address.go) and
 * returns {id, webtransport, certHashes} with id and hashes as Uint8Arrays.
 */
export async function parseAddress(s) {
  s = s.trim();
  if (!s.startsWith("aster1")) throw new Error('address lacks the "aster1" prefix');
  const rec = base58Decode(s.slice(6));
  if (rec.length < 37 || rec.length > 1024) throw new Error("address record has a bad length");
  const body = rec.subarray(0, rec.length - 4);
  const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  if (!equalBytes(sum.subarray(0, 4), rec.subarray(rec.length - 4))) {
    throw new Error("address checksum mismatch: mistyped or truncated");
  }
  if (body[0] !== 1) throw new Error(`unknown address version ${body[0]}`);
  const out = { id: body.slice(1, 33), webtransport: "", certHashes: [] };
  for (let p = 33; p < body.length; ) {
    if (p + 2 > body.length) throw new Error("truncated address entry");
    const typ = body[p], n = body[p + 1];
    const v = body.subarray(p + 2, p + 2 + n);
    if (v.length !== n) throw new Error("truncated address entry");
    p += 2 + n;
    if (typ === 0x90) out.webtransport = fromUTF8.decode(v);
    else if (typ === 0x91) {
      if (n !== 32) throw new Error("bad certificate hash entry");
      out.certHashes.push(v.slice());
    } else if (typ === 0x00 || (typ > 0x03 && typ < 0x80)) {
      throw new Error(`unsupported address entry type ${typ}`);
    }
  }
  if (!out.webtransport) throw new Error("address has no WebTransport URL");
  return out;
}

/** ByteReader reads exact byte counts from a ReadableStream. */
class ByteReader {
  constructor(readable) {
    this.reader = readable.getReader();
    this.buf = new Uint8Array(0);
    this.eof = false;
  }
  // fill reads until n bytes are buffered; false at EOF before that.
  async fill(n) {
    while (this.buf.length < n) {
      if (this.eof) return false;
      let chunk;
      try {
        chunk = await this.reader.read();
      } catch (e) {
        throw resetError(e);
      }
      const { value, done } = chunk;
      if (done) {
        this.eof = true;
        continue;
      }
      this.buf = this.buf.length ? concat(this.buf, value) : value;
    }
    return true;
  }
  async readExact(n) {
    if (!(await this.fill(n))) throw new Error(`stream ended: wanted ${n} bytes, got ${this.buf.length}`);
    const out = this.buf.slice(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  // atEOF reports whether the stream ended with nothing left buffered.
  async atEOF() {
    return !(await this.fill(1));
  }
  cancel() {
    return this.reader.cancel().catch(() => {});
  }
}

// resetError maps a stream reset to a status (PROTOCOL.md: a reset without
// a trailer is UNAVAILABLE, unless its code says cancel or deadline).
function resetError(e) {
  if (e instanceof AsterError) return e;
  const code = e && e.streamErrorCode;
  if (code === 1) return new AsterError(1, "call cancelled by the server");
  if (code === 4) return new AsterError(4, "deadline exceeded");
  return new AsterError(14, `stream reset: ${e && e.message}`);
}

function frame(flags, payload) {
  const b = new Uint8Array(5 + payload.length);
  new DataView(b.buffer).setUint32(0, 1 + payload.length, true);
  b[4] = flags;
  b.set(payload, 5);
  return b;
}

// readFrame returns {flags, payload}, or null at a clean end of stream.
async function readFrame(r) {
  if (await r.atEOF()) return null;
  const prefix = await r.readExact(5);
  const len = new DataView(prefix.buffer, prefix.byteOffset, 5).getUint32(0, true);
  if (len === 0) throw new AsterError(3, "frame length 0");
  if (len > MAX_FRAME) throw new AsterError(8, `frame of ${len} bytes exceeds ${MAX_FRAME}`);
  const flags = prefix[4];
  if (flags & FLAG_COMPRESSED) throw new AsterError(12, "compressed frames are not supported by aster.js");
  return { flags, payload: await r.readExact(len - 1) };
}

/** AsterClient calls the services of one endpoint over one WebTransport session. */
export class AsterClient {
  constructor(wt, serverId, clientId) {
    this.wt = wt;
    this.serverId = serverId;
    this.clientId = clientId;
    this.callId = 0;
  }

  /**
   * connect opens a session to addr ({id, webtransport, certHashes}, as
   * parseAddress returns) and runs the identity exchange.
   */
  static async connect(addr) {
    const wt = new WebTransport(addr.webtransport, {
      serverCertificateHashes: addr.certHashes.map((h) => ({ algorithm: "sha-256", value: h })),
    });
    await wt.ready;
    try {
      const clientId = await identify(wt, addr.id, addr.certHashes);
      return new AsterClient(wt, addr.id, clientId);
    } catch (e) {
      wt.close({ closeCode: 1, reason: "identity exchange failed" });
      throw e;
    }
  }

  // start opens a call stream and sends the header and request (then FIN).
  async start(method, req, timeoutMs) {
    const dot = method.lastIndexOf(".");
    if (dot <= 0) throw new AsterError(3, `method ${method} is not "Service.method"`);
    const header = {
      service: method.slice(0, dot),
      method: method.slice(dot + 1),
      callId: ++this.callId,
      serializationMode: "json",
    };
    if (timeoutMs) header.timeout = timeoutMs;
    const st = await this.wt.createBidirectionalStream();
    const w = st.writable.getWriter();
    // The server may stop reading (STOP_SENDING) once it has the request,
    // before our FIN is acknowledged; the response still arrives, so the
    // outcome of the write side is not the call's outcome.
    w.write(concat(frame(FLAG_HEADER, utf8.encode(JSON.stringify(header))), frame(0, utf8.encode(JSON.stringify(req))))).catch(() => {});
    w.close().catch(() => {});
    return new ByteReader(st.readable);
  }

  /**
   * unary calls a unary method and returns its response. onHeader, if
   * given, is called with the response metadata when the server sends any
   * (PROTOCOL.md 5.4).
   */
  async unary(method, req, { timeoutMs, onHeader } = {}) {
    const r = await this.start(method, req, timeoutMs);
    const header = responseHeader(onHeader);
    let resp;
    for (;;) {
      const f = await readFrame(r);
      if (f === null) throw new AsterError(14, "stream ended without a trailer");
      if (f.flags & FLAG_TRAILER) {
        trailerError(f.payload);
        if (resp === undefined) throw new AsterError(13, "no response before the trailer");
        return resp;
      }
      if (f.flags & FLAG_HEADER) {
        header.frame(f.payload);
        continue;
      }
      header.data();
      resp = JSON.parse(fromUTF8.decode(f.payload));
    }
  }

  /**
   * serverStream calls a server-streaming method and yields each message.
   * Breaking out of the loop cancels the call (the server sees the stream
   * stop).
   */
  async *serverStream(method, req, { timeoutMs, onHeader } = {}) {
    const r = await this.start(method, req, timeoutMs);
    const header = responseHeader(onHeader);
    let finished = false;
    try {
      for (;;) {
        const f = await readFrame(r);
        if (f === null) throw new AsterError(14, "stream ended without a trailer");
        if (f.flags & FLAG_TRAILER) {
          finished = true;
          trailerError(f.payload);
          return;
        }
        if (f.flags & FLAG_HEADER) {
          header.frame(f.payload);
          continue;
        }
        header.data();
        yield JSON.parse(fromUTF8.decode(f.payload));
      }
    } finally {
      if (!finished) await r.cancel();
    }
  }

  /** close ends the session. */
  close() {
    this.wt.close({ closeCode: 0, reason: "client closed" });
  }
}

// responseHeader tracks the server's optional HEADER frame (response
// metadata, PROTOCOL.md 5.4): at most one, before any DATA frame.
function responseHeader(onHeader) {
  let seen = false;
  let data = false;
  return {
    frame(payload) {
      if (seen || data) throw new AsterError(13, "unexpected response header");
      seen = true;
      const h = JSON.parse(fromUTF8.decode(payload));
      if (onHeader) onHeader(h.metadata || {});
    },
    data() {
      data = true;
    },
  };
}

function trailerError(payload) {
  const t = JSON.parse(fromUTF8.decode(payload));
  if (t.code) throw new AsterError(t.code, t.message, t.details);
}

// identify runs the client side of the identity exchange
// (PROTOCOL.md section 18) and returns this page's ephemeral endpoint id.
async function identify(wt, serverId, certHashes) {
  const streams = wt.incomingBidirectionalStreams.getReader();
  const { value: st, done } = await streams.read();
  streams.releaseLock();
  if (done) throw new Error("session ended before the identity challenge");
  const r = new ByteReader(st.readable);
  const ch = await r.readExact(129);
  if (ch[0] !== IDENTITY_VERSION) throw new Error(`identity version ${ch[0]}`);
  const claimed = ch.subarray(1, 33), nonce = ch.subarray(33, 65), certSig = ch.subarray(65, 129);
  if (!equalBytes(claimed, serverId)) {
    throw new AsterError(16, `peer is ${toHex(claimed).slice(0, 16)}, dialled ${toHex(serverId).slice(0, 16)}`);
  }
  // The browser pinned the certificate hashes; the served one must be signed
  // by the endpoint key the address names.
  const pub = await crypto.subtle.importKey("raw", serverId, { name: "Ed25519" }, false, ["verify"]);
  let signed = false;
  for (const h of certHashes) {
    if (await crypto.subtle.verify({ name: "Ed25519" }, pub, certSig, certMessage(h))) signed = true;
  }
  if (!signed) throw new AsterError(16, "the endpoint key did not sign the pinned certificate");

  const kp = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const clientId = new Uint8Array(await crypto.subtle.exportKey("raw", kp.publicKey));
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, kp.privateKey, proofMessage(serverId, nonce, clientId)));
  const w = st.writable.getWriter();
  await w.write(concat(Uint8Array.of(IDENTITY_VERSION), clientId, sig));
  await w.close();
  const res = await r.readExact(1);
  if (res[0] !== 0 || !(await r.atEOF())) throw new Error(`identity refused (result ${res[0]})`);
  return clientId;
}

/** certMessage is what a server's endpoint key signs for a certificate hash. */
export function certMessage(hash) {
  return concat(utf8.encode(CERT_CONTEXT), hash);
}

/** proofMessage is what a client signs in the identity exchange. */
export function proofMessage(serverId, nonce, clientId) {
  return concat(utf8.encode(PROOF_CONTEXT), serverId, nonce, clientId);
}

export { fromHex, frame };
