//! Property tests of the command decoder: whatever a client sends, it never panics, and what it
//! refuses is refused with `invalid_message` or `unknown_type`.

use herald::protocol::{Command, ErrorCode, Request};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Arbitrary JSON, nested a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A command-shaped object: a known or unknown `type` and any values for the usual fields.
fn command_like() -> impl Strategy<Value = Value> {
    let kinds = prop_oneof![
        Just("auth"),
        Just("refresh"),
        Just("subscribe"),
        Just("unsubscribe"),
        Just("publish"),
        Just("presence"),
        Just("history"),
        Just("ack"),
        Just("ping"),
        Just("echo"),
        Just("status"),
        Just("join_room"),
        Just("leave_room"),
        Just("subscription"),
        Just("broadcast"),
        Just("nope"),
    ];
    let fields = prop::collection::btree_map(
        prop_oneof![
            Just("topic"),
            Just("token"),
            Just("event"),
            Just("data"),
            Just("since"),
            Just("limit"),
            Just("ids"),
            Just("ref"),
            Just("room"),
            Just("action"),
            Just("project_id"),
        ],
        any_json(),
        0..6,
    );
    (kinds, fields).prop_map(|(kind, fields)| {
        let mut map: Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        map.insert("type".into(), Value::String(kind.into()));
        Value::Object(map)
    })
}

fn check(text: &str) {
    match Request::parse(text) {
        Ok(request) => {
            assert!(matches!(
                request.reference,
                None | Some(Value::String(_) | Value::Number(_))
            ));
            if let Command::History { limit, .. } = request.command {
                assert!((1..=1000).contains(&limit));
            }
        }
        Err(rejection) => {
            assert!(
                matches!(
                    rejection.code,
                    ErrorCode::InvalidMessage | ErrorCode::UnknownType
                ),
                "{rejection:?}"
            );
            assert!(!rejection.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_never_panics(value in any_json()) {
        check(&value.to_string());
    }

    #[test]
    fn command_shaped_json_is_decoded_or_refused_with_a_code(value in command_like()) {
        check(&value.to_string());
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    for depth in [100, 1_000, 100_000] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        check(&deep);
        check(&format!(r#"{{"type": "echo", "data": {deep}}}"#));
    }
}
