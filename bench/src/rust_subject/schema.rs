//! The QMP schema (issue #26):
//!
//! - `schema_load`: `query-qmp-schema` fetched and parsed, ms. qm: a fresh `Checker` (no
//!   per-binary cache, so every sample loads) on a bare `QmpClient`: the reply through qm's
//!   reader, then `Schema::parse` into the index — what a machine's first checked call does
//!   once per QEMU binary per process. The baseline: the raw client sends the command, reads
//!   the reply line and parses it with `serde_json` into a generic `Value`. Side measurements
//!   (`stat`): `index_ms` — the baseline's `serde_json` parse of the reply alone vs
//!   `Schema::parse` of that parsed value alone (what the index adds on top of the JSON
//!   parse); `bytes` — the reply's size on the wire vs the index's `heap_size()`.
//! - `schema_strict`: one `query-status` round trip through `Machine::cmd`, µs, on one machine
//!   whose policy alternates by block: off ("raw") and strict ("subject").
//! - `schema_check`: a nested `blockdev-add` argument set (raw over blkdebug over null-co: a
//!   union's branches, an alternate, arrays of objects, enums). The "raw" side is the command's
//!   own round trip through qm, unchecked, µs (the node deleted again, untimed); the subject
//!   is one `Schema::check_command` of the same arguments, µs (the mean over a batch of 200).
//!   Their ratio is the share of the round trip a check adds.

use std::os::fd::OwnedFd;
use std::process::Child;
use std::time::{Duration, Instant};

use qm::schema::{Checker, SchemaPolicy};
use qm::{QmpClient, Value};
use serde_json::json;

use crate::raw::{spawn_monitor, RawVm, Res};
use crate::{e, ms, order, qm_launch, qm_query_status, us, Out, Params, Side, WAIT};

/// QEMU with qm's bare QMP client on its monitor (the schema metrics need the client itself:
/// a `Machine` keeps its schema in the per-binary cache).
struct BareQmp {
    child: Child,
    client: QmpClient,
}

impl BareQmp {
    fn launch(qemu: &str) -> Res<BareQmp> {
        let (child, sock) = spawn_monitor(qemu)?;
        let client =
            QmpClient::new(OwnedFd::from(sock), "bench", qm::DEFAULT_MAX_MESSAGE).map_err(e)?;
        client.handshake(WAIT).map_err(e)?;
        Ok(BareQmp { child, client })
    }

    fn shutdown(mut self) -> Res<()> {
        self.client.execute("quit", None, WAIT).map_err(e)?;
        self.client.close();
        let status = self.child.wait().map_err(|err| format!("waitpid: {err}"))?;
        if !status.success() {
            return Err(format!("QEMU exited with {status}"));
        }
        Ok(())
    }
}

impl Drop for BareQmp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The baseline's load: the reply's bytes and the generic value `serde_json` makes of them.
fn raw_load(raw: &mut RawVm) -> Res<(Vec<u8>, Value)> {
    raw.execute("query-qmp-schema")?;
    let bytes = raw.line().to_vec();
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|err| format!("raw: bad schema reply: {err}"))?;
    if !v["return"].is_array() {
        return Err("raw: query-qmp-schema returned no array".into());
    }
    Ok((bytes, v))
}

pub fn schema_load(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 2), p.get("reps", 10));
    let q = p.qemu();
    for seg in 0..p.get("segments", 4) {
        out.pair();
        let (mut raw, bare) = if seg % 2 == 0 {
            let raw = RawVm::launch(&q)?;
            (raw, BareQmp::launch(&q)?)
        } else {
            let bare = BareQmp::launch(&q)?;
            (RawVm::launch(&q)?, bare)
        };
        let qm_load = || -> Res<usize> {
            let checker = Checker::new(None, None, SchemaPolicy::strict());
            let schema = checker.schema(&bare.client, WAIT).map_err(e)?;
            if !schema.has_command("blockdev-add") {
                return Err("qm: the schema has no blockdev-add".into());
            }
            Ok(schema.len())
        };
        for _ in 0..2 {
            raw_load(&mut raw)?;
            qm_load()?;
        }
        for block in 0..blocks {
            for side in order(block) {
                for _ in 0..reps {
                    let t = Instant::now();
                    match side {
                        Side::Raw => drop(raw_load(&mut raw)?),
                        Side::Qm => drop(qm_load()?),
                    }
                    out.push(side, ms(t.elapsed()));
                }
            }
        }
        // The index's own cost and size, once per segment (untimed by the samples above).
        let (bytes, v) = raw_load(&mut raw)?;
        let t = Instant::now();
        let parsed: Value = serde_json::from_slice(&bytes).map_err(|err| err.to_string())?;
        out.stat("index_ms", Side::Raw, ms(t.elapsed()));
        drop(parsed);
        let t = Instant::now();
        let schema = qm::schema::Schema::parse(&v["return"]).map_err(e)?;
        out.stat("index_ms", Side::Qm, ms(t.elapsed()));
        out.stat("bytes", Side::Raw, bytes.len() as f64);
        out.stat("bytes", Side::Qm, schema.heap_size() as f64);
        raw.shutdown()?;
        bare.shutdown()?;
    }
    Ok(())
}

pub fn schema_strict(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps) = (p.get("blocks", 4), p.get("reps", 250));
    let q = p.qemu();
    for _ in 0..p.get("segments", 20) {
        out.pair();
        let vm = qm_launch(&q)?;
        // The first checked call loads the schema: before any sample.
        vm.set_schema_policy(SchemaPolicy::strict());
        for _ in 0..100 {
            qm_query_status(&vm)?;
        }
        vm.set_schema_policy(SchemaPolicy::off());
        for _ in 0..100 {
            qm_query_status(&vm)?;
        }
        for block in 0..blocks {
            for side in order(block) {
                vm.set_schema_policy(match side {
                    Side::Raw => SchemaPolicy::off(),
                    Side::Qm => SchemaPolicy::strict(),
                });
                for _ in 0..reps {
                    let t = Instant::now();
                    qm_query_status(&vm)?;
                    out.push(side, us(t.elapsed()));
                }
            }
        }
        // A typo is refused under strict (so the samples above ran the check).
        vm.set_schema_policy(SchemaPolicy::strict());
        if vm.cmd("query-statu", None).is_ok() {
            return Err("qm: strict let an unknown command through".into());
        }
        vm.shutdown(WAIT).map_err(e)?;
    }
    Ok(())
}

/// The nested `blockdev-add` arguments of `schema_check`.
fn nested_blockdev() -> Value {
    json!({
        "driver": "raw",
        "node-name": "bench-top",
        "discard": "unmap",
        "cache": {"direct": false, "no-flush": false},
        "file": {
            "driver": "blkdebug",
            "node-name": "bench-dbg",
            "image": {
                "driver": "null-co",
                "node-name": "bench-null",
                "size": 1048576,
                "read-zeroes": true
            },
            "inject-error": [{"event": "read_aio", "errno": 5, "once": true}],
            "set-state": [{"event": "flush_to_disk", "state": 1, "new_state": 2}]
        }
    })
}

pub fn schema_check(p: &Params, out: &mut Out) -> Res<()> {
    let (blocks, reps, batch) = (p.get("blocks", 2), p.get("reps", 50), 200);
    let q = p.qemu();
    let args = nested_blockdev();
    let del = json!({"node-name": "bench-top"});
    for _ in 0..p.get("segments", 4) {
        out.pair();
        let vm = qm_launch(&q)?;
        let schema = vm.schema().map_err(e)?;
        let findings = schema.check_command("blockdev-add", Some(&args));
        if !findings.is_empty() {
            return Err(format!(
                "the nested blockdev-add has findings: {findings:?}"
            ));
        }
        // The check is not a no-op: a misspelt member deep inside is found.
        let mut bad = args.clone();
        bad["file"]["image"]["read_zeroes"] = json!(true);
        if schema.check_command("blockdev-add", Some(&bad)).is_empty() {
            return Err("the check missed file.image.read_zeroes".into());
        }
        let round_trip = || -> Res<Duration> {
            let t = Instant::now();
            vm.cmd("blockdev-add", Some(&args)).map_err(e)?;
            let d = t.elapsed();
            vm.cmd("blockdev-del", Some(&del)).map_err(e)?;
            Ok(d)
        };
        let checks = || -> Res<Duration> {
            let t = Instant::now();
            for _ in 0..batch {
                if !std::hint::black_box(schema.check_command("blockdev-add", Some(&args)))
                    .is_empty()
                {
                    return Err("a finding".into());
                }
            }
            Ok(t.elapsed() / batch as u32)
        };
        for _ in 0..10 {
            round_trip()?;
            checks()?;
        }
        for block in 0..blocks {
            for side in order(block) {
                for _ in 0..reps {
                    let d = match side {
                        Side::Raw => round_trip()?,
                        Side::Qm => checks()?,
                    };
                    out.push(side, us(d));
                }
            }
        }
        vm.shutdown(WAIT).map_err(e)?;
    }
    Ok(())
}
