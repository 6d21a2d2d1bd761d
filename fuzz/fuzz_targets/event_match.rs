//! `qm::event_match` on arbitrary JSON pairs.
//!
//! The input drives a generator of JSON values (a small key alphabet so that event and filter
//! keys collide, and numbers chosen near the edges: 2^53, 2^64-1, -0.0, 1 vs 1.0 …).
//! Properties:
//! 1. never panics, whichever way round a pair is passed;
//! 2. `event_match(x, Some(x))` and `event_match(x, None)` hold for every value `x`;
//! 3. a filter built as a sub-dict of an event matches it (a random subset of keys at every
//!    level, some values replaced by `null`, numbers swapped for an equal number of the other
//!    representation where that is exact: `1` ↔ `1.0`);
//! 4. a filter that differs from such a sub-dict in one leaf (a different number, string or
//!    bool — different as Python's `==` sees it, which compares int and float exactly), or that
//!    asks for a key the event lacks, does not match.
//!
//! A violation panics with a `[tag]`; `QM_FUZZ_ALLOW=tag,…` turns known ones into passes.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};

use qm_fuzz::allowed;

const KEYS: &[&str] = &["a", "b", "c", "event", "data", "id", ""];

fn key(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 8)? {
        u.arbitrary()
    } else {
        Ok((*u.choose(KEYS)?).to_owned())
    }
}

fn number(u: &mut Unstructured) -> Result<Number> {
    const P53: u64 = 1 << 53;
    Ok(match u.int_in_range(0..=9)? {
        0 => Number::from(u.int_in_range(0..=3u64)?),
        1 => Number::from(u.arbitrary::<u64>()?),
        2 => Number::from(u.arbitrary::<i64>()?),
        3 => Number::from_f64(u.arbitrary::<f64>()?).unwrap_or_else(|| Number::from(0)),
        4 => Number::from(P53 + u.int_in_range(0..=3u64)?),
        5 => Number::from(u64::MAX - u.int_in_range(0..=3u64)?),
        6 => Number::from(i64::MIN + u.int_in_range(0..=3i64)?),
        7 => Number::from_f64(*u.choose(&[0.0, -0.0, 1.0, 0.5, 1e300, P53 as f64])?).unwrap(),
        8 => Number::from_f64(f64::from(u.int_in_range(-3..=3i32)?)).unwrap(),
        _ => Number::from(-i64::from(u.int_in_range(1..=3i32)?)),
    })
}

fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let top = if depth == 0 { 3 } else { 5 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(number(u)?),
        3 => Value::String(key(u)?),
        4 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0..=4)? {
                map.insert(key(u)?, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// An equal number in the other representation, when the conversion is exact.
fn other_representation(n: &Number) -> Option<Number> {
    if let Some(i) = n.as_i64() {
        let f = i as f64;
        return (f as i64 == i && f.abs() < 9.2e18).then(|| Number::from_f64(f))?;
    }
    if let Some(i) = n.as_u64() {
        let f = i as f64;
        return (f < 1.8e19 && f as u64 == i).then(|| Number::from_f64(f))?;
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 || f.abs() >= 9.0e18 {
        return None;
    }
    Some(if f < 0.0 {
        Number::from(f as i64)
    } else {
        Number::from(f as u64)
    })
}

/// A filter that should match `event`: a random sub-dict of it.
fn subdict(u: &mut Unstructured, event: &Value) -> Result<Value> {
    if u.ratio(1, 6)? {
        return Ok(Value::Null);
    }
    Ok(match event {
        Value::Object(map) => {
            let mut filter = Map::new();
            for (k, v) in map {
                if u.arbitrary()? {
                    filter.insert(k.clone(), subdict(u, v)?);
                }
            }
            Value::Object(filter)
        }
        Value::Number(n) if u.arbitrary()? => {
            Value::Number(other_representation(n).unwrap_or_else(|| n.clone()))
        }
        // Arrays and scalars are compared whole.
        other => other.clone(),
    })
}

/// A scalar that Python's `==` finds different from `v`, or `None` for containers.
fn different(v: &Value) -> Option<Value> {
    Some(match v {
        Value::Null => Value::from(0),
        Value::Bool(b) => Value::Bool(!b),
        Value::String(s) => Value::String(format!("{s}x")),
        Value::Number(n) => Value::Number(if let Some(i) = n.as_u64() {
            Number::from(if i == u64::MAX { i - 1 } else { i + 1 })
        } else if let Some(i) = n.as_i64() {
            Number::from(i + 1) // negative: cannot overflow
        } else {
            let f = n.as_f64()?;
            let g = if f == 0.0 {
                1.0
            } else if f.abs() >= 1.0 {
                f / 2.0
            } else {
                f * 2.0
            };
            Number::from_f64(g)?
        }),
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// A filter that must not match `event`: a sub-dict with one leaf changed, or with an extra
/// key. `None` when no such filter was made (e.g. an empty object with nowhere to descend).
fn mismatch(u: &mut Unstructured, event: &Value) -> Result<Option<Value>> {
    match event {
        Value::Object(map) => {
            let mut filter = Map::new();
            for (k, v) in map {
                if u.ratio(1, 3)? {
                    filter.insert(k.clone(), subdict(u, v)?);
                }
            }
            if map.is_empty() || u.ratio(1, 4)? {
                let extra = key(u)?;
                if map.contains_key(&extra) {
                    return Ok(None);
                }
                filter.insert(extra, value(u, 1)?);
            } else {
                let i = u.choose_index(map.len())?;
                let (k, v) = map.iter().nth(i).expect("index in range");
                let Some(bad) = mismatch(u, v)? else {
                    return Ok(None);
                };
                filter.insert(k.clone(), bad);
            }
            Ok(Some(Value::Object(filter)))
        }
        Value::Array(items) => {
            let mut longer = items.clone();
            longer.push(Value::Null);
            Ok(Some(Value::Array(longer)))
        }
        scalar => Ok(different(scalar)),
    }
}

/// Whether an unexpected match comes from two distinct integers that are equal as f64.
fn lossy_numbers(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .any(|(k, v)| y.get(k).is_some_and(|w| lossy_numbers(v, w))),
        (Value::Number(x), Value::Number(y)) => x != y && x.as_f64() == y.as_f64(),
        _ => false,
    }
}

fn check(u: &mut Unstructured) -> Result<()> {
    let event = value(u, 4)?;
    let other = value(u, 4)?;
    // 1: no panic, either way round.
    let _ = qm::event_match(&event, Some(&other));
    let _ = qm::event_match(&other, Some(&event));
    // 2: reflexive; no filter matches all.
    assert!(qm::event_match(&event, Some(&event)), "[reflexive] {event}");
    assert!(qm::event_match(&event, None), "[none] {event}");
    assert!(
        qm::event_match(&event, Some(&Value::Null)),
        "[null] {event}"
    );
    // 3: a sub-dict matches.
    let filter = subdict(u, &event)?;
    if !qm::event_match(&event, Some(&filter)) {
        panic!("[subdict] filter {filter} does not match event {event}");
    }
    // 4: a changed leaf or an extra key does not.
    if let Some(bad) = mismatch(u, &event)? {
        if qm::event_match(&event, Some(&bad)) {
            let tag = if lossy_numbers(&event, &bad) {
                "bigint"
            } else {
                "mismatch"
            };
            if !allowed(tag) {
                panic!("[{tag}] filter {bad} should not match event {event}");
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
