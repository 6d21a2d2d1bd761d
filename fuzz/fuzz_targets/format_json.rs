//! `qm::format::json`, the printf-style JSON builder behind C's `QM_QMPF` / `QM_JSONF`, on
//! arbitrary formats and typed arguments.
//!
//! Properties:
//! 1. never panics, whatever the format and arguments;
//! 2. a string passed to `%s` comes back unchanged, in a double- or single-quoted template;
//! 3. a string of JSON text passed to `%j` comes back as the same value;
//! 4. integers given to `%lld` / `%llu` come back exactly.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use qm::format::{json, Arg};
use serde_json::Value;

fn arg<'a>(u: &mut Unstructured<'a>) -> Result<Arg<'a>> {
    Ok(match u.int_in_range(0..=4)? {
        0 => Arg::Str(u.arbitrary()?),
        1 => Arg::Int(u.arbitrary()?),
        2 => Arg::Uint(u.arbitrary()?),
        3 => Arg::Double(u.arbitrary()?),
        _ => Arg::Bool(u.arbitrary()?),
    })
}

fn check(u: &mut Unstructured) -> Result<()> {
    // 1: arbitrary format, arbitrary arguments.
    let format: &str = u.arbitrary()?;
    let n = u.int_in_range(0..=4)?;
    let args = (0..n).map(|_| arg(u)).collect::<Result<Vec<_>>>()?;
    let _ = json(format, &args);

    // 2: %s round trip.
    let s: &str = u.arbitrary()?;
    for template in ["{\"k\": %s}", "{'k': [%s]}"] {
        let v = json(template, &[Arg::Str(s)]).expect("a string always fits %s");
        let got = v.get("k").map(|k| if k.is_array() { &k[0] } else { k });
        assert_eq!(
            got.and_then(Value::as_str),
            Some(s),
            "[string] {template} {s:?}"
        );
    }
    // 3: %j round trip of any JSON value.
    if let Ok(v) = serde_json::from_str::<Value>(s) {
        let built = json("{'k': %j}", &[Arg::Str(s)]).expect("JSON text fits %j");
        assert_eq!(built["k"], v, "[splice] {s:?}");
    }
    // 4: integers.
    let (i, w): (i64, u64) = (u.arbitrary()?, u.arbitrary()?);
    let v = json("[%lld, %llu]", &[Arg::Int(i), Arg::Uint(w)]).expect("integers fit");
    assert_eq!(
        (v[0].as_i64(), v[1].as_u64()),
        (Some(i), Some(w)),
        "[integers]"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
