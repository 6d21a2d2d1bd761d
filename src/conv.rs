//! The conventions of QEMU's Python harness that every binding applies the same way, decided
//! here once (C: `qm_conv_keys`).

use serde_json::Value;

/// The seed's keyword-argument convention: `_` in top-level keys becomes `-`
/// (`{"node_name": …}` → `{"node-name": …}`). Other values are returned unchanged.
pub fn conv_keys(args: &Value) -> Value {
    match args {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.replace('_', "-"), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_level_keys_only() {
        assert_eq!(
            conv_keys(&json!({"node_name": "a", "opts": {"read_only": true}})),
            json!({"node-name": "a", "opts": {"read_only": true}})
        );
        assert_eq!(conv_keys(&json!([1])), json!([1]));
    }
}
