//! How a publication travels through Redis: a small JSON header (id, scope, event, time,
//! sender), a newline, then the payload's JSON bytes verbatim (no JSON inside a JSON string).
//! On the Pub/Sub channels the body is prefixed with `P<offset>\n<epoch>\n` (both empty for a
//! publication without a stream position); the Lua scripts write that prefix themselves.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::engine::EngineError;
use crate::protocol::Sender;
use crate::publication::{Publication, Scope};

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    scope: Cow<'a, str>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    target: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    from: Option<(Cow<'a, str>, Cow<'a, str>)>,
}

/// The stored and published form of a publication (without offset and epoch).
pub fn encode(p: &Publication) -> Vec<u8> {
    let target = match &p.scope {
        Scope::All => None,
        Scope::User(t) | Scope::Role(t) | Scope::Project(t) | Scope::Topic(t) => {
            Some(Cow::Borrowed(t.as_str()))
        }
    };
    let header = Header {
        id: Cow::Borrowed(&p.id),
        scope: Cow::Borrowed(p.scope.name()),
        target,
        event: Cow::Borrowed(&p.event),
        ts: Cow::Borrowed(&p.timestamp),
        from: p.from.as_ref().map(|f| {
            (
                Cow::Borrowed(f.user_id.as_str()),
                Cow::Borrowed(f.client_id.as_str()),
            )
        }),
    };
    // Serializing these types cannot fail: strings and a JSON value.
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(&serde_json::to_vec(&p.data).unwrap_or_default());
    out
}

/// Reads what [`encode`] wrote back into a publication with the given stream position.
pub fn decode(
    body: &[u8],
    offset: Option<u64>,
    epoch: Option<String>,
) -> Result<Publication, EngineError> {
    let split = body
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| EngineError::new("a Redis message without a header"))?;
    let header: Header = serde_json::from_slice(&body[..split])
        .map_err(|e| EngineError(format!("a Redis message header: {e}")))?;
    let data = serde_json::from_slice(&body[split + 1..])
        .map_err(|e| EngineError(format!("a Redis message payload: {e}")))?;
    let scope = Scope::parse(&header.scope, header.target.as_deref()).map_err(EngineError)?;
    Ok(Publication {
        id: header.id.into_owned(),
        scope,
        event: header.event.into_owned(),
        data,
        timestamp: header.ts.into_owned(),
        from: header.from.map(|(user_id, client_id)| Sender {
            user_id: user_id.into_owned(),
            client_id: client_id.into_owned(),
        }),
        offset,
        epoch,
        accepted: None,
    })
}

/// A Pub/Sub message: `P<offset>\n<epoch>\n<body>`; the offset and epoch may be empty.
pub fn decode_message(message: &[u8]) -> Result<Publication, EngineError> {
    let bad = || EngineError::new("a malformed Redis publication");
    let rest = message.strip_prefix(b"P").ok_or_else(bad)?;
    let (offset, rest) = split_line(rest).ok_or_else(bad)?;
    let (epoch, body) = split_line(rest).ok_or_else(bad)?;
    let offset = if offset.is_empty() {
        None
    } else {
        let text = std::str::from_utf8(offset).map_err(|_| bad())?;
        Some(text.parse::<u64>().map_err(|_| bad())?)
    };
    let epoch = (!epoch.is_empty())
        .then(|| String::from_utf8(epoch.to_vec()).map_err(|_| bad()))
        .transpose()?;
    decode(body, offset, epoch)
}

/// The Pub/Sub form of a publication without a stream position.
pub fn message(p: &Publication) -> Vec<u8> {
    let mut out = b"P\n\n".to_vec();
    out.extend_from_slice(&encode(p));
    out
}

fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|b| *b == b'\n')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_publication_survives_the_round_trip_with_its_payload_verbatim() {
        let mut p = Publication::new(Scope::Topic("chat:a".into()), "msg", json!({"t": "x\ny"}));
        p.from = Some(Sender {
            user_id: "al\nice".into(),
            client_id: "c1".into(),
        });
        let body = encode(&p);
        let header_end = body.iter().position(|b| *b == b'\n').expect("header");
        assert_eq!(&body[header_end + 1..], br#"{"t":"x\ny"}"#);
        let mut wire = b"P7\nep\n".to_vec();
        wire.extend_from_slice(&body);
        let back = decode_message(&wire).expect("decodes");
        assert_eq!(back.id, p.id);
        assert_eq!(back.scope, p.scope);
        assert_eq!(back.data, p.data);
        assert_eq!(back.from, p.from);
        assert_eq!(back.offset, Some(7));
        assert_eq!(back.epoch.as_deref(), Some("ep"));
        let plain = decode_message(&message(&p)).expect("decodes");
        assert_eq!((plain.offset, plain.epoch), (None, None));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"P",
            b"P1\n",
            b"Px\ne\n{}\n{}",
            b"P\n\nnot json\n{}",
            b"Q\n\n{}",
        ] {
            assert!(decode_message(bad).is_err(), "{bad:?}");
        }
    }
}
