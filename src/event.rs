//! Matching QMP events against filters.

use serde_json::Value;

/// True when `event` matches `filter`, the rule of QEMU's `QEMUMachine.event_match`.
///
/// The filter is a sub-dict: `event` must hold every key of `filter`, recursively, with equal
/// values wherever the filter's value is not `null`. A `null` filter (or `None`) matches
/// anything, so a filter cannot ask for an explicit `null`. Numbers compare by value (`1`
/// matches `1.0`).
///
/// ```
/// use qm::event_match;
/// use serde_json::json;
/// assert!(event_match(&json!({"foo": {"bar": 1}}), Some(&json!({"foo": null}))));
/// assert!(!event_match(&json!({"foo": {"bar": 1}}), Some(&json!({"foo": {"abc": null}}))));
/// ```
pub fn event_match(event: &Value, filter: Option<&Value>) -> bool {
    match filter {
        None | Some(Value::Null) => true,
        Some(Value::Object(filter)) => match event {
            Value::Object(event) => filter
                .iter()
                .all(|(k, f)| event.get(k).is_some_and(|e| event_match(e, Some(f)))),
            _ => false,
        },
        Some(Value::Number(f)) => match event {
            Value::Number(e) => e == f || (e.as_f64().is_some() && e.as_f64() == f.as_f64()),
            _ => false,
        },
        Some(other) => other == event,
    }
}

#[cfg(test)]
mod tests {
    use super::event_match;
    use serde_json::json;

    /// The examples of the docstring of `QEMUMachine.event_match`, query on the left.
    #[test]
    fn seed_docstring_examples() {
        assert!(event_match(&json!({"foo": 1}), None));
        assert!(event_match(
            &json!({"foo": {"bar": 1}}),
            Some(&json!({"foo": null}))
        ));
        assert!(event_match(&json!({"foo": 5}), Some(&json!({"foo": null}))));
        assert!(!event_match(
            &json!({"foo": {"bar": 1}}),
            Some(&json!({"foo": {"abc": null}}))
        ));
        assert!(event_match(
            &json!({"foo": {"bar": 1, "rab": 2}}),
            Some(&json!({"foo": {"rab": 2}}))
        ));
    }

    #[test]
    fn values_compare_exactly() {
        let ev = json!({"event": "BLOCK_JOB_COMPLETED", "data": {"device": "drive0", "len": 10}});
        assert!(event_match(
            &ev,
            Some(&json!({"data": {"device": "drive0"}}))
        ));
        assert!(!event_match(
            &ev,
            Some(&json!({"data": {"device": "drive1"}}))
        ));
        assert!(event_match(&ev, Some(&json!({"data": {"len": 10.0}}))));
        assert!(!event_match(&ev, Some(&json!({"data": {"len": 11}}))));
        assert!(!event_match(
            &ev,
            Some(&json!({"data": {"device": {"x": 1}}}))
        ));
        assert!(!event_match(&ev, Some(&json!({"missing": null}))));
        assert!(event_match(&json!([1, 2]), Some(&json!([1, 2]))));
        assert!(!event_match(&json!("1"), Some(&json!(1))));
    }
}
