//! Hostile input against a running server: thousands of mutated, truncated, oversized and
//! type-confused AdmissionReviews. Never a 5xx, never a dropped connection; every 200 echoes
//! the uid and carries a patch that applies to what was sent. And a slow client cannot stop
//! others from being served.

mod common;

use base64::Engine as _;
use common::Server;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

const FIXTURE: &str = include_str!("../benches/fixtures/replicaset-review.json");

/// xorshift64*: deterministic, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn nested(depth: usize, list: bool) -> String {
    let (open, close) = if list { ("[", "]") } else { ("{\"a\":", "}") };
    format!("{}1{}", open.repeat(depth), close.repeat(depth))
}

fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1e308),
        4 => json!(""),
        5 => json!("x".repeat(rng.below(100_000))),
        6 => json!([]),
        7 => json!({}),
        8 => serde_json::from_str(&nested(40, true)).unwrap(),
        9 => json!([{"name": 7}, "str", null, {"name": "metrics-collector", "image": 1}]),
        10 => {
            json!({"name": {"nested": true}, "{{ 7*7 }}": "{% for i in range(10) %}x{% endfor %}"})
        }
        _ => json!("10\"\n- name: evil\n  image: evil"),
    }
}

/// Replaces a random node of `v` (walking down at random) with an odd value.
fn confuse(v: &mut Value, rng: &mut Rng) {
    let mut path = String::new();
    let mut cur = &*v;
    for _ in 0..rng.below(8) {
        match cur {
            Value::Object(m) if !m.is_empty() => {
                let (k, next) = m.iter().nth(rng.below(m.len())).unwrap();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                cur = next;
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                path.push_str(&format!("/{i}"));
                cur = &a[i];
            }
            _ => break,
        }
    }
    let Some(node) = v.pointer_mut(&path) else {
        return;
    };
    match (rng.below(3), &mut *node) {
        (0, Value::Object(m)) => {
            m.insert(format!("k{}", rng.below(5)), odd_value(rng));
        }
        (1, Value::Object(m)) if !m.is_empty() => {
            let k = m
                .keys()
                .nth(rng.below(m.len()))
                .cloned()
                .unwrap_or_default();
            m.remove(&k);
        }
        _ => *node = odd_value(rng),
    }
}

fn mutate(rng: &mut Rng, i: usize) -> Vec<u8> {
    let base = FIXTURE.trim_end().as_bytes();
    match rng.below(8) {
        0 => base[..rng.below(base.len())].to_vec(),
        1 => {
            let mut b = base.to_vec();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(b.len());
                b[at] = (rng.next() & 0xff) as u8;
            }
            b
        }
        2 => {
            // Deep nesting inside the object, past serde_json's recursion limit for values
            // (the server never parses it: it skips it, iteratively).
            let deep = nested(200 + rng.below(100_000), rng.below(2) == 0);
            FIXTURE
                .replacen("\"object\":{", &format!("\"object\":{{\"deep\":{deep},"), 1)
                .into_bytes()
        }
        3 => [
            b"[".as_slice(),
            b"null",
            b"\"x\"",
            b"42",
            b"{}",
            b"{\"request\":{}}",
        ][rng.below(6)]
        .to_vec(),
        _ => {
            let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
            v["request"]["uid"] = json!(format!("uid-{i}"));
            for _ in 0..1 + rng.below(4) {
                confuse(&mut v, rng);
            }
            serde_json::to_vec(&v).unwrap()
        }
    }
}

/// JSON text as Go's decoder (and so the apiserver) reads it: an unpaired surrogate escape
/// such as `"\ud800"` is grammatical JSON (RFC 8259, 8.2) and reads as U+FFFD. serde_json
/// refuses it into a `Value`; the webhook, which never decodes the fields it skips, accepts it
/// as Go does.
fn as_go_reads_it(text: &str) -> String {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    let b = text.as_bytes();
    let (mut out, mut i) = (String::with_capacity(text.len()), 0);
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'u') && i + 6 <= b.len() {
            let unit = text.get(i + 2..i + 6).and_then(hex);
            let next = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                .then(|| text.get(i + 8..i + 12).and_then(hex))
                .flatten();
            match unit {
                Some(0xD800..=0xDBFF) if matches!(next, Some(0xDC00..=0xDFFF)) => {
                    out.push_str(&text[i..i + 12]);
                    i += 12;
                }
                Some(0xD800..=0xDFFF) => {
                    out.push_str("\\ufffd");
                    i += 6;
                }
                _ => {
                    out.push_str(&text[i..i + 2]);
                    i += 2;
                }
            }
        } else if b[i] == b'\\' && i + 1 < b.len() {
            // any other escape, `\\` included: both bytes, so the next is not misread
            let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + 1 + len]);
            i += 1 + len;
        } else {
            let len = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + len]);
            i += len;
        }
    }
    out
}

fn check_answer(sent: &[u8], status: u16, body: &[u8]) -> Result<(), String> {
    match status {
        400 | 413 => return Ok(()),
        200 => {}
        other => {
            return Err(format!(
                "HTTP {other}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
    }
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("200 but not JSON: {e}"))?;
    // A body nested deeper than this test can parse into a Value: check it without the deep
    // key (the patch never touches it).
    let text = as_go_reads_it(&String::from_utf8_lossy(sent));
    let sent: Value = match text.find(",\"deep\":").or_else(|| text.find("{\"deep\":")) {
        Some(_) => {
            let start = text.find("\"deep\":").unwrap_or(0);
            let end = text[start..]
                .find(",\"metadata\"")
                .map(|e| start + e + 1)
                .unwrap_or(text.len());
            serde_json::from_str(&format!("{}{}", &text[..start], &text[end..]))
        }
        None => serde_json::from_str(&text),
    }
    .map_err(|e| format!("200 for a body that is not JSON ({e})"))?;
    let uid = &sent["request"]["uid"];
    if answer["response"]["uid"] != *uid {
        return Err(format!(
            "uid {} does not echo {uid}",
            answer["response"]["uid"]
        ));
    }
    if let Some(patch) = answer["response"].get("patch") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().ok_or("patch is not a string")?)
            .map_err(|e| format!("patch is not base64: {e}"))?;
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).map_err(|e| format!("not a JSON Patch: {e}"))?;
        let mut object = sent["request"]["object"].clone();
        json_patch::patch(&mut object, &patch)
            .map_err(|e| format!("the patch does not apply to what was sent: {e}"))?;
    }
    Ok(())
}

#[test]
fn thousands_of_hostile_reviews_get_no_5xx_and_every_patch_applies() {
    let server = Server::start(&[]);
    let client = server.blocking_client();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut by_status, mut failures) = (std::collections::BTreeMap::new(), Vec::new());
    for i in 0..3000 {
        let body = mutate(&mut rng, i);
        let resp = client
            .post(server.url("/mutate"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("#{i}: no answer: {e}"));
                continue;
            }
        };
        let status = resp.status().as_u16();
        *by_status.entry(status).or_insert(0) += 1;
        let answer = resp.bytes().unwrap_or_default();
        if let Err(e) = check_answer(&body, status, &answer) {
            failures.push(format!(
                "#{i}: {e}\n  sent: {}",
                String::from_utf8_lossy(&body[..body.len().min(400)])
            ));
        }
    }
    // Oversized bodies: refused with 413 before they are read; a client still writing may
    // see the 413 or the reset that follows it, never a timeout or another status (the 413
    // with no body sent is tests/tls.rs's).
    for size in [9 * 1024 * 1024, 20 * 1024 * 1024] {
        match client
            .post(server.url("/mutate"))
            .body(vec![b'{'; size])
            .send()
        {
            Ok(r) => assert_eq!(r.status(), 413),
            Err(e) => assert!(!e.is_timeout(), "a reset, not a wait: {e:?}"),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 3000 failed (statuses {by_status:?}):\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > 500,
        "too few answered as reviews: {by_status:?}"
    );
    assert!(
        by_status.get(&400).copied().unwrap_or(0) > 100,
        "too few refused: {by_status:?}"
    );
    assert_eq!(
        client.get(server.url("/readyz")).send().unwrap().status(),
        200
    );
    eprintln!("statuses: {by_status:?}");
}

#[test]
fn slow_clients_do_not_stop_others_from_being_served() {
    let server = Server::start(&[]);
    // Slowloris: connections that never finish their TLS handshake.
    let mut slow = Vec::new();
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", server.port)) {
            let _ = s.write_all(b"\x16\x03\x01"); // the start of a TLS ClientHello, and no more
            slow.push(s);
        }
    }
    let client = server.blocking_client();
    let body = serde_json::to_vec(&common::review(
        "served",
        "team-a",
        &common::simple_pod("p"),
    ))
    .unwrap();
    for _ in 0..50 {
        let r = client
            .post(server.url("/mutate"))
            .body(body.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .expect("served despite slow clients");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(slow.len(), 200);
}
