// The browse page's proof checker: an `apiary-bee-proof/1` bundle (the format and the steps
// are in core/src/bundle/mod.rs) checked against the feed key alone, in the browser, with no
// library: BLAKE2b, compact-encoding, protobuf and flat-tree math are written out here;
// Ed25519 is WebCrypto's (secure contexts only: https or localhost). The steps follow
// tests/js/verify-bundle.js, the JS stack's own checker, strict where it is strict.
//
//   await ApiaryVerify.verifyBundle(bundle, key32)  // -> what it proves; throws Refused(reason)
//   await ApiaryVerify.checkHit(entry)              // -> {state: 'verified'|'unverified'|'unchecked', ...}
'use strict';
const ApiaryVerify = (() => {
  class Refused extends Error {}
  class Unchecked extends Error {}
  const fail = (m) => { throw new Refused(m) };
  const FORMAT = 'apiary-bee-proof/1';
  const TWO32 = 0x100000000;

  // ---- BLAKE2b (RFC 7693): a 64-bit word is (lo, hi) at [2k, 2k + 1] of a Uint32Array.
  const IV = new Uint32Array([0xf3bcc908, 0x6a09e667, 0x84caa73b, 0xbb67ae85, 0xfe94f82b, 0x3c6ef372,
    0x5f1d36f1, 0xa54ff53a, 0xade682d1, 0x510e527f, 0x2b3e6c1f, 0x9b05688c, 0xfb41bd6b, 0x1f83d9ab,
    0x137e2179, 0x5be0cd19]);
  const SIGMA = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4], [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13], [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11], [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5], [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0]];
  const v = new Uint32Array(32), m = new Uint32Array(32);
  // v[a] += v[b] + m[x] (words; x < 0: no message word)
  function add3(a, b, x) {
    let lo = v[a] + v[b], hi = v[a + 1] + v[b + 1];
    if (x >= 0) { lo += m[2 * x]; hi += m[2 * x + 1] }
    v[a] = lo; v[a + 1] = hi + Math.floor(lo / TWO32);
  }
  // v[d] = rotr64(v[d] ^ v[a], n), 0 < n < 32 or n = 32 or n = 63
  function xorRot(d, a, n) {
    const lo = v[d] ^ v[a], hi = v[d + 1] ^ v[a + 1];
    if (n === 32) { v[d] = hi; v[d + 1] = lo } else if (n === 63) {
      v[d] = (lo << 1) | (hi >>> 31); v[d + 1] = (hi << 1) | (lo >>> 31);
    } else { v[d] = (lo >>> n) | (hi << (32 - n)); v[d + 1] = (hi >>> n) | (lo << (32 - n)) }
  }
  function G(a, b, c, d, x, y) {
    add3(a, b, x); xorRot(d, a, 32); add3(c, d, -1); xorRot(b, c, 24);
    add3(a, b, y); xorRot(d, a, 16); add3(c, d, -1); xorRot(b, c, 63);
  }
  function compress(h, block, t, last) {
    for (let i = 0; i < 16; i++) { v[i] = h[i]; v[i + 16] = IV[i] }
    v[24] ^= t % TWO32; v[25] ^= Math.floor(t / TWO32);
    if (last) { v[28] = ~v[28]; v[29] = ~v[29] }
    for (let i = 0; i < 32; i++) m[i] = block[4 * i] | (block[4 * i + 1] << 8) | (block[4 * i + 2] << 16) | (block[4 * i + 3] << 24);
    for (let r = 0; r < 12; r++) {
      const s = SIGMA[r % 10];
      G(0, 8, 16, 24, s[0], s[1]); G(2, 10, 18, 26, s[2], s[3]); G(4, 12, 20, 28, s[4], s[5]); G(6, 14, 22, 30, s[6], s[7]);
      G(0, 10, 20, 30, s[8], s[9]); G(2, 12, 22, 24, s[10], s[11]); G(4, 14, 16, 26, s[12], s[13]); G(6, 8, 18, 28, s[14], s[15]);
    }
    for (let i = 0; i < 16; i++) h[i] ^= v[i] ^ v[i + 16];
  }
  // BLAKE2b of the concatenation of `parts` (Uint8Arrays), `outlen` bytes (1..64), keyed
  // with `key` (0..64 bytes) when given.
  function blake2b(parts, outlen = 32, key = null) {
    const kl = key ? key.length : 0;
    if (!(outlen >= 1 && outlen <= 64) || kl > 64) throw new Error('blake2b: bad output or key length');
    const h = new Uint32Array(IV);
    h[0] ^= 0x01010000 ^ (kl << 8) ^ outlen;
    const block = new Uint8Array(128);
    let fill = 0, t = 0;
    if (kl) { block.set(key); fill = 128 }
    for (const p of parts) {
      for (let i = 0; i < p.length; i++) {
        if (fill === 128) { t += 128; compress(h, block, t, false); fill = 0 }
        block[fill++] = p[i];
      }
    }
    t += fill; block.fill(0, fill); compress(h, block, t, true);
    const out = new Uint8Array(outlen);
    for (let i = 0; i < outlen; i++) out[i] = h[i >> 2] >>> (8 * (i & 3));
    return out;
  }
  const hash = (...parts) => blake2b(parts, 32);

  // ---- bytes
  const enc = new TextEncoder();
  const hexOf = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  function compare(a, b) {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return a.length - b.length;
  }
  function u64(n) { // n < 2^53, little-endian
    const b = new Uint8Array(8), lo = n % TWO32, hi = Math.floor(n / TWO32);
    for (let i = 0; i < 4; i++) { b[i] = lo >>> (8 * i); b[i + 4] = hi >>> (8 * i) }
    return b;
  }
  function concat(parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length }
    return out;
  }
  function fromHex(s, where, len = -1) {
    if (typeof s !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(s)) fail(`${where} must be lowercase hex`);
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
    if (len !== -1 && out.length !== len) fail(`${where} must be ${len} bytes`);
    return out;
  }
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  function fromBase64(s, where) {
    if (typeof s !== 'string' || !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s)) {
      fail(`${where} must be standard padded base64`);
    }
    // canonical: the bits the padding leaves over are zero
    const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
    if (pad && B64.indexOf(s[s.length - pad - 1]) & (pad === 2 ? 15 : 3)) fail(`${where} is not canonical base64`);
    const bin = atob(s), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  const Z32 = 'ybndrfg8ejkmcpqxot1uwisza345h769';
  // A feed key in z-base-32 (52 characters, canonical) -> 32 bytes, or null.
  function fromZ32(s) {
    if (typeof s !== 'string' || s.length !== 52) return null;
    const out = new Uint8Array(33);
    let acc = 0, bits = 0, n = 0;
    for (const ch of s) {
      const x = Z32.indexOf(ch);
      if (x < 0) return null;
      acc = ((acc << 5) | x) & 0xfff; bits += 5;
      if (bits >= 8) { bits -= 8; out[n++] = (acc >>> bits) & 0xff }
    }
    return n === 32 && (acc & ((1 << bits) - 1)) === 0 ? out.subarray(0, 32) : null;
  }

  // ---- hypercore: namespaces, Merkle hashes, flat-tree (indices below 2^53, no bit ops)
  const HYPERCORE = hash(enc.encode('hypercore'));
  const [NS_TREE, NS_MANIFEST, NS_DEFAULT] = [0, 3, 4].map((i) => hash(HYPERCORE, Uint8Array.of(i)));
  const selfTest = hexOf(NS_TREE) === '9fac70b50ca14efc4e91c833b204e75b8b5aad8b5881bfc0adb5ef38a3275b9c' &&
    hexOf(NS_MANIFEST) === 'e64b7108eacce47cfc61ac850568f55f8b15b82ec5ed78c4ec597b036e2a1498';
  const leafHash = (data) => hash(Uint8Array.of(0), u64(data.length), data);
  const parentHash = (size, l, r) => hash(Uint8Array.of(1), u64(size), l, r);
  const treeHash = (roots) => hash(Uint8Array.of(2), ...roots.flatMap((r) => [r.hash, u64(r.index), u64(r.size)]));
  function depth(i) { let d = 0; while (i % 2 === 1) { i = (i - 1) / 2; d++ } return d }
  const offsetOf = (i, d) => ((i + 1) / 2 ** d - 1) / 2;
  const indexOf = (d, o) => (1 + 2 * o) * 2 ** d - 1;
  const parentOf = (i) => { const d = depth(i); return indexOf(d + 1, Math.floor(offsetOf(i, d) / 2)) };
  const childrenOf = (i) => { const d = depth(i), o = 2 * offsetOf(i, d); return [indexOf(d - 1, o), indexOf(d - 1, o + 1)] };
  const spanOf = (i) => { const d = depth(i), o = offsetOf(i, d); return [o * 2 ** (d + 1), (o + 1) * 2 ** (d + 1) - 2] };
  function fullRoots(length) {
    const out = [];
    let offset = 0;
    while (length) {
      let factor = 1;
      while (factor * 2 <= length) factor *= 2;
      out.push(offset + factor - 1); offset += 2 * factor; length -= factor;
    }
    return out;
  }

  // ---- compact-encoding (reader) and the manifest, re-encoded as hypercore would
  class Reader {
    constructor(b, what) { this.b = b; this.i = 0; this.what = what }
    left() { return this.b.length - this.i }
    bytes(n) {
      if (n > this.left()) fail(`${this.what} ends early`);
      this.i += n; return this.b.subarray(this.i - n, this.i);
    }
    le(n) { const b = this.bytes(n); let x = 0; for (let i = n - 1; i >= 0; i--) x = x * 256 + b[i]; return x }
    uint() {
      const a = this.bytes(1)[0];
      const x = a < 0xfd ? a : this.le(a === 0xfd ? 2 : a === 0xfe ? 4 : 8);
      if (!Number.isSafeInteger(x)) fail(`${this.what} has a number above 2^53`);
      return x;
    }
    count(min) { const n = this.uint(); if (n * min > this.left()) fail(`${this.what} ends early`); return n }
    done() { if (this.left()) fail(`${this.what} has ${this.left()} trailing bytes`) }
  }
  function writeUint(out, x) {
    if (x < 0xfd) { out.push(x); return }
    const [tag, n] = x <= 0xffff ? [0xfd, 2] : x < TWO32 ? [0xfe, 4] : [0xff, 8];
    out.push(tag, ...u64(x).subarray(0, n));
  }
  function decodeManifest(bytes) {
    const r = new Reader(bytes, 'tree.manifest');
    const version = r.uint(), man = { version, allowPatch: false, quorum: 1, signers: [], prologue: null, linked: null, userData: null };
    const hashId = () => { const h = r.uint(); if (h !== 0) fail(`tree.manifest: unknown hash id ${h}`) };
    const signer = () => {
      const s = r.uint(); if (s !== 0) fail(`tree.manifest: unknown signature id ${s}`);
      return { namespace: r.bytes(32), publicKey: r.bytes(32) };
    };
    const signers = () => { const n = r.count(65); const out = []; for (let i = 0; i < n; i++) out.push(signer()); return out };
    if (version === 0) {
      hashId();
      const type = r.uint();
      if (type === 0) fail('tree.manifest: a v0 prologue-only manifest has no signer (refused, as hypercore does)');
      else if (type === 1) man.signers = [signer()];
      else if (type === 2) { man.allowPatch = (r.uint() & 1) !== 0; man.quorum = r.uint(); man.signers = signers() }
      else fail(`tree.manifest: unknown v0 type ${type}`);
    } else if (version <= 3) {
      const flags = r.uint(); hashId();
      man.allowPatch = (flags & 1) !== 0; man.quorum = r.uint(); man.signers = signers();
      if (flags & 2) man.prologue = { hash: r.bytes(32), length: r.uint() };
      if (flags & 4) { const n = r.count(32); man.linked = []; for (let i = 0; i < n; i++) man.linked.push(r.bytes(32)) }
      if (flags & 8) man.userData = r.bytes(r.uint());
    } else fail(`tree.manifest: unknown version ${version}`);
    r.done();
    // canonical: the bytes hypercore would write for what was read
    const out = [];
    writeUint(out, version);
    const writeSigner = (s) => { out.push(0, ...s.namespace, ...s.publicKey) };
    if (version === 0) {
      out.push(0);
      if (man.quorum === 1 && man.signers.length === 1 && !man.allowPatch) { out.push(1); writeSigner(man.signers[0]) } else {
        out.push(2, man.allowPatch ? 1 : 0); writeUint(out, man.quorum);
        writeUint(out, man.signers.length); man.signers.forEach(writeSigner);
      }
    } else {
      writeUint(out, (man.allowPatch ? 1 : 0) | (man.prologue ? 2 : 0) | (man.linked ? 4 : 0) | (man.userData ? 8 : 0));
      out.push(0); writeUint(out, man.quorum);
      writeUint(out, man.signers.length); man.signers.forEach(writeSigner);
      if (man.prologue) { out.push(...man.prologue.hash); writeUint(out, man.prologue.length) }
      if (man.linked) { writeUint(out, man.linked.length); man.linked.forEach((k) => out.push(...k)) }
      if (man.userData) { writeUint(out, man.userData.length); out.push(...man.userData) }
    }
    if (!equal(Uint8Array.from(out), bytes)) fail('tree.manifest is not canonically encoded');
    return man;
  }

  // ---- Ed25519: WebCrypto, after libsodium's own refusals (small-order points, s >= L,
  // a non-canonical key), so what passes here passes in hypercore.
  const FF = 'ff'.repeat(30);
  const SMALL_ORDER = ['00'.repeat(32), '01' + '00'.repeat(31), '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
    'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', `ec${FF}7f`, `ed${FF}7f`, `ee${FF}7f`].map((h) => fromHex(h, 'point'));
  const smallOrder = (p) => SMALL_ORDER.some((s) => s.every((x, i) => (i === 31 ? p[i] & 0x7f : p[i]) === x));
  const L = fromHex('edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010', 'L');
  function below(a, b) { for (let i = 31; i >= 0; i--) if (a[i] !== b[i]) return a[i] < b[i]; return false }
  const nonCanonicalKey = (p) => (p[31] & 0x7f) === 0x7f && p.subarray(1, 31).every((x) => x === 0xff) && p[0] >= 0xed;
  async function ed25519(pk, msg, sig) {
    if (sig.length !== 64 || pk.length !== 32) return false;
    if (smallOrder(pk) || nonCanonicalKey(pk) || smallOrder(sig.subarray(0, 32)) || !below(sig.subarray(32), L)) return false;
    let key;
    try { key = await crypto.subtle.importKey('raw', pk, { name: 'Ed25519' }, false, ['verify']) } catch (e) { return false }
    return crypto.subtle.verify({ name: 'Ed25519' }, key, sig, msg);
  }
  let available = null;
  // Whether this browser checks Ed25519 (RFC 8032 test 1), once.
  function ed25519Available() {
    if (!available) {
      available = (async () => {
        if (!selfTest) return 'the BLAKE2b self-test failed';
        if (!(globalThis.crypto && crypto.subtle)) return 'WebCrypto is unavailable (the page must be served over https or from localhost)';
        try {
          const ok = await ed25519(fromHex('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'pk'), new Uint8Array(0),
            fromHex('e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b', 'sig'));
          return ok ? null : 'this browser\'s Ed25519 fails its self-test';
        } catch (e) { return `this browser has no WebCrypto Ed25519 (${e.message})` }
      })();
    }
    return available;
  }

  // ---- 1. the signed head
  async function checkSignedTree(key, tree) {
    const { length, fork, roots } = tree;
    if (length < 1 || length > 2 ** 52) fail(`tree.length ${length} is out of range`);
    const want = fullRoots(length);
    if (roots.length !== want.length || roots.some((r, i) => r.index !== want[i])) fail(`the roots are not those of a log of ${length} blocks`);
    if (!Number.isSafeInteger(roots.reduce((n, r) => n + r.size, 0))) fail('the tree\'s byte length overflows 2^53');
    const th = treeHash(roots);
    const man = tree.manifest === null ? null : decodeManifest(tree.manifest);
    const compat = man === null || (man.signers.length === 1 && equal(man.signers[0].publicKey, key));
    if (!compat && !equal(hash(NS_MANIFEST, tree.manifest), key)) fail('tree.manifest does not hash to the feed key (and is not the compat form)');
    const sig = tree.signature;
    if (compat) {
      if (sig === null) fail('tree.signature is missing');
      if (sig.length !== 64) fail(`tree.signature must be a raw 64-byte signature, has ${sig.length} bytes`);
      if (!await ed25519(key, concat([NS_TREE, th, u64(length), u64(fork)]), sig)) fail('the signature does not verify over (tree hash, length, fork)');
      return;
    }
    if (man.version >= 1 && man.prologue && length <= man.prologue.length) {
      if (length === man.prologue.length && equal(th, man.prologue.hash)) return;
      fail('the tree does not match the manifest\'s prologue');
    }
    if (sig === null) fail('tree.signature is missing');
    const signable = (ctx) => concat([NS_TREE, ctx, th, u64(length), u64(fork)]);
    if (man.version === 0 && !man.allowPatch && man.signers.length === 1) {
      if (sig.length !== 64) fail(`tree.signature must be a raw 64-byte signature, has ${sig.length} bytes`);
      if (!await ed25519(man.signers[0].publicKey, signable(man.signers[0].namespace), sig)) fail('the signature does not verify');
      return;
    }
    // the multisig container: proofs, then patch nodes (none), and nothing after
    const r = new Reader(sig, 'tree.signature (multisig)');
    const n = r.count(66), proofs = [];
    for (let i = 0; i < n; i++) {
      let p;
      if (man.version === 0) { const flags = r.uint(); p = { signer: r.uint(), signature: r.bytes(64), patch: flags & 1 } } else p = { signer: r.uint(), signature: r.bytes(64), patch: r.uint() };
      if (p.patch) fail('patched multisig signatures are not supported');
      proofs.push(p);
    }
    if (r.uint() !== 0) fail('the signature carries patch nodes (not supported)');
    r.done();
    if (man.quorum === 0) fail('the manifest has quorum 0');
    if (proofs.length < man.quorum) fail(`${proofs.length} signatures, the quorum is ${man.quorum}`);
    const tried = new Set();
    for (const p of proofs.slice(0, man.quorum)) {
      const s = man.signers[p.signer];
      if (!s || tried.has(p.signer)) fail(`a signature from an unknown or repeated signer ${p.signer}`);
      tried.add(p.signer);
      if (!await ed25519(s.publicKey, signable(man.version === 0 ? s.namespace : key), p.signature)) fail(`the signature of signer ${p.signer} does not verify`);
    }
  }

  // ---- 2. Merkle paths from the blocks to the signed roots
  function checkMerkle(tree, blocks, nodes) {
    const rootFor = (leaf) => tree.roots.find((r) => { const [a, z] = spanOf(r.index); return a <= leaf && leaf <= z });
    const onPath = new Set(), leaves = new Map(), reached = new Map();
    for (const b of blocks) {
      const root = rootFor(2 * b.seq);
      if (!root) fail(`block ${b.seq} is outside a tree of ${tree.length} blocks`);
      leaves.set(2 * b.seq, b); reached.set(root.index, root);
      for (let i = 2 * b.seq; ; i = parentOf(i)) { onPath.add(i); if (i === root.index) break }
    }
    const given = new Map();
    let prev = -1;
    for (const n of nodes) {
      if (n.index <= prev) fail(`nodes are not sorted by index, each once (${n.index} after ${prev})`);
      prev = n.index;
      if (onPath.has(n.index)) fail(`node ${n.index} lies above a block of the bundle: it must be computed, not given`);
      given.set(n.index, n);
    }
    const used = new Set(), memo = new Map();
    const compute = (i) => {
      if (memo.has(i)) return memo.get(i);
      let node;
      if (!onPath.has(i)) {
        node = given.get(i);
        if (!node) fail(`the bundle lacks tree node ${i}`);
        used.add(i);
      } else if (i % 2 === 0) {
        const d = leaves.get(i).data;
        node = { size: d.length, hash: leafHash(d) };
      } else {
        const [a, z] = childrenOf(i).map(compute);
        const size = a.size + z.size;
        if (!Number.isSafeInteger(size)) fail(`the size of node ${i} overflows 2^53`);
        node = { size, hash: parentHash(size, a.hash, z.hash) };
      }
      memo.set(i, node);
      return node;
    };
    for (const root of reached.values()) {
      const got = compute(root.index);
      if (got.size !== root.size || !equal(got.hash, root.hash)) fail(`the blocks under root ${root.index} do not hash to the signed root`);
    }
    for (const n of nodes) if (!used.has(n.index)) fail(`node ${n.index} is in the bundle but no path uses it`);
  }

  // ---- 3. hyperbee blocks (protobuf, canonical as hyperbee writes them) and the get walk
  function pbVarint(r) {
    let x = 0, mul = 1;
    for (let i = 0; i < 10; i++) {
      const b = r.bytes(1)[0];
      x += (b & 0x7f) * mul; mul *= 128;
      if (b < 0x80) {
        if (b === 0 && i > 0) fail(`${r.what} has an overlong varint`);
        if (!Number.isSafeInteger(x)) fail(`${r.what} has a number above 2^53`);
        return x;
      }
    }
    fail(`${r.what} has a varint over 10 bytes`);
  }
  function pbField(r, tag) { // a length-delimited field `tag` if it comes next, else null
    if (!r.left() || r.b[r.i] !== (tag << 3 | 2)) return null;
    r.i++;
    return r.bytes(pbVarint(r));
  }
  function pbPacked(bytes, what) {
    const r = new Reader(bytes, what), out = [];
    while (r.left()) out.push(pbVarint(r));
    return out;
  }
  function decodeBeeBlock(seq, bytes) {
    const what = `block ${seq}`, r = new Reader(bytes, what);
    const index = pbField(r, 1), key = pbField(r, 2), value = pbField(r, 3);
    if (!index || !key) fail(`${what} is not a hyperbee node (index and key come first)`);
    if (r.left()) fail(`${what} is not canonically encoded (unknown or repeated fields)`);
    const ir = new Reader(index, `${what}'s index`), levels = [];
    while (ir.left()) {
      const lvl = pbField(ir, 1);
      if (!lvl) fail(`${what}'s index is not canonically encoded`);
      const lr = new Reader(lvl, `${what} level ${levels.length}`);
      const keys = pbField(lr, 1), children = pbField(lr, 2);
      if (lr.left() || (keys && !keys.length) || (children && !children.length)) fail(`${what} level ${levels.length} is not canonically encoded`);
      const l = { keys: keys ? pbPacked(keys, lr.what) : [], children: children ? pbPacked(children, lr.what) : [] };
      if (l.children.length % 2) fail(`${what} level ${levels.length} has an odd children list`);
      levels.push(l);
    }
    return { seq, key, value, levels };
  }
  const isDeletion = (b) => b.value === null && !b.levels.some((l) => l.keys.includes(b.seq));
  function lookup(version, key, blocks) {
    const bySeq = new Map(blocks.map((b) => [b.seq, { raw: b, decoded: null, read: false }]));
    const read = (seq, what) => {
      if (seq === 0) fail(`${what} points at block 0 (the header)`);
      if (seq >= version) fail(`${what} points at block ${seq}, beyond version ${version}`);
      const e = bySeq.get(seq);
      if (!e) fail(`the lookup reads block ${seq}, which the bundle lacks`);
      e.read = true;
      if (!e.decoded) e.decoded = decodeBeeBlock(seq, e.raw.data);
      return e.decoded;
    };
    const finish = (res) => {
      for (const [seq, e] of bySeq) if (!e.read) fail(`block ${seq} is in the bundle but the lookup never reads it`);
      return res;
    };
    const absent = { found: false, seq: null, value: null };
    if (version < 2) return finish(absent);
    let block = read(version - 1, 'the root'), offset = 0;
    for (let d = 0; d < 64; d++) {
      const level = block.levels[offset];
      if (!level) fail(`block ${block.seq} has no tree node at level ${offset}`);
      if (equal(block.key, key)) return finish(isDeletion(block) ? absent : { found: true, seq: block.seq, value: block.value });
      let lo = 0, hi = level.keys.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1, ks = level.keys[mid];
        const kb = ks === block.seq ? block : read(ks, `key ${mid} of block ${block.seq} level ${offset}`);
        const c = compare(key, kb.key);
        if (c === 0) return finish({ found: true, seq: kb.seq, value: kb.value });
        if (c < 0) hi = mid; else lo = mid + 1;
      }
      if (!level.children.length) return finish(absent);
      if (2 * lo + 1 >= level.children.length) fail(`block ${block.seq} level ${offset} has no child ${lo}`);
      const [cs, co] = level.children.slice(2 * lo, 2 * lo + 2);
      block = read(cs, `child ${lo} of block ${block.seq} level ${offset}`); offset = co;
    }
    fail('the lookup goes deeper than 64 nodes');
  }

  // ---- the bundle's JSON, strictly
  function fields(o, names, where) {
    if (typeof o !== 'object' || o === null || Array.isArray(o)) fail(`${where} must be an object`);
    for (const f of names) if (!Object.prototype.hasOwnProperty.call(o, f)) fail(`${where} lacks "${f}"`);
    for (const f of Object.keys(o)) if (!names.includes(f)) fail(`${where} has an unknown field "${f}"`);
  }
  function uint(x, where) {
    if (!Number.isSafeInteger(x) || x < 0) fail(`${where} must be an integer in [0, 2^53)`);
    return x;
  }
  const array = (x, where) => { if (!Array.isArray(x)) fail(`${where} must be an array`); return x };
  function node(n, where) {
    fields(n, ['index', 'size', 'hash'], where);
    return { index: uint(n.index, `${where}.index`), size: uint(n.size, `${where}.size`), hash: fromHex(n.hash, `${where}.hash`, 32) };
  }
  function parse(b) {
    fields(b, ['format', 'feed', 'tree', 'version', 'key', 'blocks', 'nodes', 'result'], 'the bundle');
    if (b.format !== FORMAT) fail(`format ${JSON.stringify(b.format)}, not "${FORMAT}"`);
    const t = b.tree;
    fields(t, ['length', 'fork', 'roots', 'signature', 'manifest'], 'tree');
    const opt = (x, where) => { if (x === null) return null; const y = fromHex(x, where); if (!y.length) fail(`${where} is empty`); return y };
    if (typeof b.key !== 'string' || !b.key.isWellFormed()) fail('key must be a well-formed string');
    const r = b.result;
    let result;
    if (r && r.found === true) {
      fields(r, ['found', 'seq', 'value'], 'result');
      result = { found: true, seq: uint(r.seq, 'result.seq'), value: r.value === null ? null : fromBase64(r.value, 'result.value') };
    } else if (r && r.found === false) { fields(r, ['found'], 'result'); result = { found: false, seq: null, value: null } } else fail('result.found must be true or false');
    return {
      feed: fromHex(b.feed, 'feed', 32),
      tree: {
        length: uint(t.length, 'tree.length'), fork: uint(t.fork, 'tree.fork'),
        roots: array(t.roots, 'tree.roots').map((n, i) => node(n, `tree.roots[${i}]`)),
        signature: opt(t.signature, 'tree.signature'), manifest: opt(t.manifest, 'tree.manifest')
      },
      version: uint(b.version, 'version'),
      key: b.key,
      blocks: array(b.blocks, 'blocks').map((x, i) => {
        fields(x, ['seq', 'data'], `blocks[${i}]`);
        return { seq: uint(x.seq, `blocks[${i}].seq`), data: fromBase64(x.data, `blocks[${i}].data`) };
      }),
      nodes: array(b.nodes, 'nodes').map((n, i) => node(n, `nodes[${i}]`)),
      result
    };
  }

  // Checks `bundle` (parsed JSON) against the 32-byte feed key. Resolves to what it proves;
  // rejects with Refused(reason), or Unchecked(reason) when this browser cannot check.
  async function verifyBundle(bundle, key) {
    const why = await ed25519Available();
    if (why) throw new Unchecked(why);
    try {
      if (bundle && bundle.format === 'apiary-inclusion-proof/1') {
        fail('the aggregator sent only an inclusion proof: the block is in the signed log, but without its bytes the value cannot be checked');
      }
      const b = parse(bundle);
      if (!equal(b.feed, key)) fail(`the proof is for feed ${hexOf(b.feed)}, not ${hexOf(key)}`);
      const L = b.tree.length;
      if (b.version < 1 || b.version > L) fail(`version ${b.version} is not between 1 and the signed length ${L}`);
      let prev = 0;
      for (const x of b.blocks) {
        if (x.seq === 0) fail('block 0 is the header, which no lookup reads');
        if (x.seq <= prev) fail(`blocks are not sorted by seq, each once (${x.seq} after ${prev})`);
        if (x.seq >= L) fail(`block ${x.seq} is beyond the signed length ${L}`);
        prev = x.seq;
      }
      await checkSignedTree(key, b.tree);
      checkMerkle(b.tree, b.blocks, b.nodes);
      const got = lookup(b.version, enc.encode(b.key), b.blocks), want = b.result;
      const same = got.found === want.found && got.seq === want.seq &&
        (got.value === null ? want.value === null : want.value !== null && equal(got.value, want.value));
      if (!same) fail('the claimed result is not what the lookup over the proven blocks ends on');
      return { length: L, fork: b.tree.fork, version: b.version, key: b.key, found: got.found, seq: got.seq, value: got.value };
    } catch (e) {
      if (e instanceof Refused) throw e;
      throw new Refused(`the checker failed: ${e && e.message ? e.message : e}`);
    }
  }

  // ---- a hit of /v1/feed or /v1/search against its own proof
  function sameJson(a, b) {
    if (a === b) return true;
    if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return false;
    const ka = Object.keys(a), kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && sameJson(a[k], b[k]));
  }
  function strings(x, out = []) {
    if (typeof x === 'string') out.push(x);
    else if (x && typeof x === 'object') for (const y of Object.values(x)) strings(y, out);
    return out;
  }
  // The text of a server-made snippet (matches in <mark>, escaped, '…' at cut ends).
  function snippetText(html) {
    return html.replace(/<\/?mark>/g, '').replace(/&(amp|lt|gt|quot|#39);/g, (_, n) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" })[n]);
  }
  // Every line of a snippet must be in a string of the proven value ('…' marks a cut).
  function snippetProven(html, value) {
    const all = strings(value);
    return snippetText(html).split('\n').every((line, i, lines) => {
      const cut = [line];
      if (i === 0 && line.startsWith('…')) cut.push(line.slice(1));
      for (const l of [...cut]) if (i === lines.length - 1 && l.endsWith('…')) cut.push(l.slice(0, -1));
      return cut.some((l) => all.some((s) => s.includes(l)));
    });
  }
  // Fetches `entry.proof` and checks it against the hit's feed key, key, seq and value (and
  // snippet). Never throws: resolves to {state, reason?, proven?}.
  async function checkHit(entry, fetchFn = fetch) {
    try {
      const key = fromZ32(entry.feed);
      if (!key) fail('the hit\'s feed is not a z-base-32 key');
      if (typeof entry.proof !== 'string' || !entry.proof.startsWith('/v1/proofs/')) fail('the hit has no proof link');
      let res, body;
      try {
        res = await fetchFn(entry.proof, { cache: 'no-store' });
        body = await res.json();
      } catch (e) { fail(`the proof could not be fetched (${e.message})`) }
      if (!res.ok) fail(`the proof could not be had: HTTP ${res.status}${body && body.error ? ` (${body.error.message})` : ''}`);
      const p = await verifyBundle(body, key);
      if (p.key !== entry.key) fail(`the proof is for key ${JSON.stringify(p.key)}, not the hit's`);
      if (!p.found) fail('the proof says the feed no longer holds this key');
      if (entry.seq != null && entry.seq !== p.seq) fail(`the proof ends at block ${p.seq}, the hit says block ${entry.seq}`);
      let value;
      try { value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(p.value)) } catch (e) { fail('the proven value is not JSON') }
      if (!sameJson(value, entry.value)) fail('the value shown is not the value the feed signed');
      if (typeof entry.snippet === 'string' && !snippetProven(entry.snippet, value)) fail('the snippet shown is not in the value the feed signed');
      return { state: 'verified', proven: p };
    } catch (e) {
      if (e instanceof Unchecked) return { state: 'unchecked', reason: e.message };
      return { state: 'unverified', reason: e instanceof Refused ? e.message : `the checker failed: ${e && e.message}` };
    }
  }

  return { verifyBundle, checkHit, blake2b, fromZ32, Refused, Unchecked };
})();
if (typeof module === 'object' && module.exports) module.exports = ApiaryVerify;
