// Unit tests of aster.js against the Go test vectors (run: node --test
// examples/missioncontrol/web/). The browser test covers the rest.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseAddress, certMessage, proofMessage, frame, toHex, fromHex, AsterClient } from "./aster.js";

// discovery/address_test.go: TestWebTransportVector.
const WT_VECTOR =
  "aster1jWWerZXKoKWuGV3KQrEtFnYVNLAVPekUtULrejQtrdrnbp2c2NB4VBQzYBooM2X9ThAw5kKUqQb51MQ52HNFUKGVecxg1Rc9LT3T45674XjXvsvqto4YyA3HbHnVwfrbba1ZdREzxPHaShMswHMszFnLwneTSE3QWbRTVvDVg7n7iJPjh15RVVHYCWvFYVQm74";

test("parseAddress decodes the WebTransport vector", async () => {
  const a = await parseAddress(WT_VECTOR);
  assert.equal(toHex(a.id), "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  assert.equal(a.webtransport, "https://127.0.0.1:4434/aster");
  assert.deepEqual(a.certHashes.map(toHex), ["11".repeat(32), "22".repeat(32)]);
});

test("parseAddress rejects typos and addresses without WebTransport", async () => {
  await assert.rejects(parseAddress(WT_VECTOR.slice(0, -1) + "5"), /checksum mismatch/);
  await assert.rejects(parseAddress("aster1" + "0" + WT_VECTOR.slice(7)), /invalid base58/);
  await assert.rejects(parseAddress("bster1abc"), /prefix/);
  // discovery's original vector: direct addresses and a relay only.
  await assert.rejects(
    parseAddress("aster1EUehKUF7U4gthugev63w5f1txDmd5Kf9dZ4FmjuUgmkN9AycwqjLbwJuiwrurwAqkPsihv2WMseh4WC2TRdBZcwSf8ZGqaTELujr5eeNNiuzPTMqCmvdAHiKg2vj7p"),
    /no WebTransport URL/,
  );
});

test("frame encodes length (flags + payload, little-endian) and flags", () => {
  assert.equal(toHex(frame(0x04, new TextEncoder().encode("{}"))), "03000000047b7d");
});

// transport/webtransport/vector_test.go: TestIdentityVector.
const PKCS8_ED25519 = "302e020100300506032b657004220420";

async function keyFromSeed(byte) {
  const seed = new Uint8Array(32).fill(byte);
  return crypto.subtle.importKey("pkcs8", fromHex(PKCS8_ED25519 + toHex(seed)), { name: "Ed25519" }, false, ["sign"]);
}

test("identity signatures match the Go vector", async () => {
  const serverId = fromHex("8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
  const clientId = fromHex("8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394");
  const nonce = Uint8Array.from({ length: 32 }, (_, i) => i);
  const hash = new Uint8Array(32).fill(0xab);
  const certSig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, await keyFromSeed(1), certMessage(hash)));
  assert.equal(toHex(certSig), "777787e743592608b294096fb672c73707f1e9c0fd4d4a22e6fa231a80a7a35e9c98c9350ff6f3fe3e60be54a275063587423c521a38807fc007683a64044c01");
  const proofSig = new Uint8Array(
    await crypto.subtle.sign({ name: "Ed25519" }, await keyFromSeed(2), proofMessage(serverId, nonce, clientId)),
  );
  assert.equal(toHex(proofSig), "e67b55e412eccd7dd1b7db241439c276a39ca0f507fe1e2e642d10d22390d6fe57339be6457acb1333de5b2566c032e6138557b8b95d1cb5376369d366c25507");
});

// A WebTransport stand-in whose every call stream answers with the given
// server bytes.
function fakeWT(serverBytes) {
  return {
    async createBidirectionalStream() {
      return {
        writable: new WritableStream({ write() {} }),
        readable: new ReadableStream({
          start(c) {
            c.enqueue(serverBytes);
            c.close();
          },
        }),
      };
    },
  };
}

const enc = (s) => new TextEncoder().encode(s);
const cat = (...bs) => {
  const out = new Uint8Array(bs.reduce((n, b) => n + b.length, 0));
  let i = 0;
  for (const b of bs) {
    out.set(b, i);
    i += b.length;
  }
  return out;
};
// PROTOCOL.md 5.4, example response-header-json.
const RESPONSE_HEADER = fromHex("26000000047b226d65746164617461223a7b22782d7365727665642d6279223a22656467652d31227d7d");
const DATA = frame(0x00, enc('{"status":"running"}'));
const TRAILER_OK = frame(0x02, enc('{"code":0}'));

test("a response HEADER before the data is read as response metadata", async () => {
  let md;
  const c = new AsterClient(fakeWT(cat(RESPONSE_HEADER, DATA, TRAILER_OK)), new Uint8Array(32), new Uint8Array(32));
  const resp = await c.unary("MissionControl.getStatus", {}, { onHeader: (m) => (md = m) });
  assert.deepEqual(resp, { status: "running" });
  assert.deepEqual(md, { "x-served-by": "edge-1" });
  // Without onHeader it is skipped; server streams accept it too.
  const c2 = new AsterClient(fakeWT(cat(RESPONSE_HEADER, DATA, DATA, TRAILER_OK)), new Uint8Array(32), new Uint8Array(32));
  const got = [];
  for await (const m of c2.serverStream("MissionControl.tailLogs", {})) got.push(m);
  assert.equal(got.length, 2);
});

test("a response HEADER after data, or a second one, is a protocol error", async () => {
  const after = new AsterClient(fakeWT(cat(DATA, RESPONSE_HEADER, TRAILER_OK)), new Uint8Array(32), new Uint8Array(32));
  await assert.rejects(after.unary("MissionControl.getStatus", {}), (e) => e.code === 13);
  const twice = new AsterClient(fakeWT(cat(RESPONSE_HEADER, RESPONSE_HEADER, DATA, TRAILER_OK)), new Uint8Array(32), new Uint8Array(32));
  await assert.rejects(twice.unary("MissionControl.getStatus", {}), (e) => e.code === 13);
});
