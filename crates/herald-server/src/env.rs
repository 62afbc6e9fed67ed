//! The environment layer: every config key has a `HERALD_*` twin, named by one rule, and
//! applied over the file (flags then go over both).
//!
//! The rule: `HERALD_` then the key's path in upper case, with `__` between a table and its
//! key: `listen` is `HERALD_LISTEN`, `limits.send_queue` is `HERALD_LIMITS__SEND_QUEUE`,
//! `jwt.issuer` is `HERALD_JWT__ISSUER`. A value is read as a TOML value when it is one
//! where the key wants one (`10`, `true`, `["a", "b"]`, `[{name = "chat"}]`), and as the text
//! itself wherever text fits (`30s`, a URL, a secret: kept exactly as written).
//! The older short names of some keys (`HERALD_JWT_SECRET`, `HERALD_MAX_CONNECTIONS`, ...) are
//! read too. A `HERALD_*` variable that names no key is reported, never ignored silently.

use toml::{Table, Value};

use crate::Unusable;

/// Variables the command line reads itself: not config keys.
const COMMAND_LINE: &[&str] = &["HERALD_CONFIG", "HERALD_LOG_FORMAT"];

/// Short names kept from before the rule, and the keys they set.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("HERALD_JWT_SECRET", "jwt.secret"),
    ("HERALD_JWT_PUBLIC_KEY", "jwt.public_key"),
    ("HERALD_MAX_CONNECTIONS", "limits.max_connections"),
    (
        "HERALD_MAX_CONNECTIONS_PER_USER",
        "limits.max_connections_per_user",
    ),
    (
        "HERALD_MAX_CONNECTIONS_PER_IP",
        "limits.max_connections_per_ip",
    ),
    ("HERALD_MAX_SUBSCRIPTIONS", "limits.max_subscriptions"),
    ("HERALD_HTTP_HEADER_TIMEOUT", "limits.http_header_timeout"),
    ("HERALD_HTTP_IDLE_TIMEOUT", "limits.http_idle_timeout"),
];

/// The JWT keys exclude each other: a layer that sets one takes the other away.
const JWT_KEYS: [&str; 2] = ["secret", "public_key"];

/// `file` with every `HERALD_*` variable of `vars` applied, and the warnings to log (unknown
/// variables). A variable whose value does not fit its key stops start-up, naming it.
pub fn apply(
    mut merged: Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(Table, Vec<String>), Unusable> {
    let mut warnings = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with("HERALD_") && !COMMAND_LINE.contains(&name.as_str()))
        .collect();
    vars.sort();
    let mut jwt_from_env = Vec::new();
    for (name, text) in vars {
        let path = key_path(&name);
        let typed = format!("v = {text}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"));
        // The text as it is first, so a secret or an id is never reinterpreted; last, a
        // comma-separated list (`HERALD_REDIS_CLUSTER=redis://a:7000,redis://b:7001`).
        // (A list's failure is not the one reported: the value was not meant as one.)
        let list = Value::Array(text.split(',').map(|t| Value::String(t.into())).collect());
        let candidates = [Value::String(text.clone())]
            .into_iter()
            .chain(typed)
            .map(|value| (value, true))
            .chain(std::iter::once((list, false)));
        let mut failure = None;
        let mut fitted = None;
        for (value, reported) in candidates {
            let mut trial = merged.clone();
            if let Err(e) = insert(&mut trial, &path, value) {
                if reported || failure.is_none() {
                    failure = Some(e);
                }
                continue;
            }
            match Value::Table(trial.clone()).try_into::<herald::Config>() {
                Ok(_) => {
                    fitted = Some(trial);
                    break;
                }
                Err(e) if reported => failure = Some(e.message().trim().replace('\n', " ")),
                Err(_) => {}
            }
        }
        match fitted {
            Some(trial) => {
                merged = trial;
                if path.first().map(String::as_str) == Some("jwt")
                    && JWT_KEYS.contains(&path.get(1).map_or("", String::as_str))
                {
                    jwt_from_env.push(path[1].clone());
                }
            }
            None => {
                let why = failure.unwrap_or_default();
                if why.contains("unknown field") || why.contains("is not a table") {
                    warnings.push(format!(
                        "{name} is not a Herald setting (no key `{}`): ignored",
                        path.join(".")
                    ));
                } else {
                    return Err(Unusable(format!("{name}: {why}")));
                }
            }
        }
    }
    match jwt_from_env.as_slice() {
        [one] => {
            // The environment's key wins over the file's other kind of key.
            if let Some(Value::Table(jwt)) = merged.get_mut("jwt") {
                jwt.retain(|key: &str, _| key == one || !JWT_KEYS.contains(&key));
            }
        }
        [] => {}
        _ => {
            return Err(Unusable(
                "the environment sets both a JWT secret and a JWT public key: set one".into(),
            ))
        }
    }
    Ok((merged, warnings))
}

/// The key path a variable names: a short name's key, or the rule's.
fn key_path(name: &str) -> Vec<String> {
    if let Some((_, key)) = SHORT_NAMES.iter().find(|(short, _)| *short == name) {
        return key.split('.').map(str::to_string).collect();
    }
    name.trim_start_matches("HERALD_")
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Sets `path` in `table`, making the tables on the way.
fn insert(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, tables)) = path.split_last() else {
        return Err("no key".into());
    };
    let mut at = table;
    for name in tables {
        let next = at
            .entry(name.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match next {
            Value::Table(inner) => at = inner,
            _ => return Err(format!("`{name}` is not a table")),
        }
    }
    at.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(
        file: &str,
        vars: &[(&str, &str)],
    ) -> Result<(herald::Config, Vec<String>), Unusable> {
        let table: Table = file.parse().expect("toml");
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let (merged, warnings) = apply(table, vars)?;
        let config = Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| Unusable(e.to_string()))?;
        Ok((config, warnings))
    }

    #[test]
    fn every_key_has_a_twin_by_the_rule() {
        let (config, warnings) = applied(
            "[limits]\nsend_queue = 5\n",
            &[
                ("HERALD_LIMITS__SEND_QUEUE", "64"),
                ("HERALD_LIMITS__PING_INTERVAL", "20s"),
                ("HERALD_JWT__ISSUER", "https://auth.example"),
                ("HERALD_COMPRESSION", "true"),
                ("HERALD_ALLOWED_ORIGINS", r#"["https://a.example"]"#),
                ("HERALD_NODE_ID", "7"),
                ("HERALD_NAMESPACES", r#"[{name = "chat", publish = true}]"#),
                ("HERALD_INBOX__TTL", "1h"),
            ],
        )
        .unwrap_or_else(|e| panic!("{}", e.0));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            config.limits.send_queue, 64,
            "the environment wins over the file"
        );
        assert_eq!(
            config.limits.ping_interval,
            std::time::Duration::from_secs(20)
        );
        assert_eq!(config.jwt.issuer.as_deref(), Some("https://auth.example"));
        assert!(config.compression);
        assert_eq!(config.allowed_origins, ["https://a.example"]);
        assert_eq!(
            config.node_id.as_deref(),
            Some("7"),
            "a number where text is wanted"
        );
        assert!(config
            .namespace("chat")
            .is_some_and(|ns| ns.publish == herald::config::PublishRule::Allowed));
        assert_eq!(config.inbox.ttl, std::time::Duration::from_secs(3600));
    }

    #[test]
    fn an_unknown_variable_is_reported_and_a_bad_value_stops() {
        let (_, warnings) =
            applied("", &[("HERALD_LISTN", "0.0.0.0:1")]).unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("HERALD_LISTN"), "{warnings:?}");
        let Err(Unusable(line)) = applied("", &[("HERALD_LIMITS__SEND_QUEUE", "many")]) else {
            panic!("a bad value is refused");
        };
        assert!(line.starts_with("HERALD_LIMITS__SEND_QUEUE: "), "{line}");
    }

    #[test]
    fn a_jwt_key_from_the_environment_replaces_the_files_other_kind() {
        let (config, _) = applied(
            "[jwt]\npublic_key = \"/k.pem\"\n",
            &[("HERALD_JWT_SECRET", "s3cret")],
        )
        .unwrap_or_else(|e| panic!("{}", e.0));
        assert_eq!(config.jwt.secret.as_deref(), Some("s3cret"));
        assert!(config.jwt.public_key.is_none());
    }
}
