//! Encodings (PROTOCOL.md section 10): MessagePack in binary frames beside JSON clients.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_msgpack_client_and_a_json_client_on_one_topic_both_get_the_publication() {
    let server = Server::start("");
    let mut packed = Client::connect(&server.ws_url(&format!(
        "encoding=msgpack&token={}",
        token("mp", "user", &[])
    )))
    .await;
    let hello = packed.recv_msgpack().await;
    assert_eq!(hello["type"], "connection.established");
    assert_eq!(hello["data"]["user_id"], "mp");
    packed
        .send_msgpack(&json!({"type": "subscribe", "topic": "feed", "ref": 1}))
        .await;
    let reply = packed.recv_msgpack().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["ref"], 1);

    let mut plain = server.user("js").await;
    plain.subscribe("feed").await;

    let (_, answer) = server
        .publish(json!({"scope": "topic", "target": "feed", "type": "update", "data": {"n": [1, 2.5, "x"]}}))
        .await;
    assert_eq!(answer["recipients"], 2);
    let a = packed.recv_msgpack().await;
    let b = plain.recv().await;
    assert_eq!(a, b, "the same envelope in both encodings");
    assert_eq!(a["data"], json!({"n": [1, 2.5, "x"]}));
}

#[tokio::test]
async fn msgpack_errors_and_first_message_auth_are_binary_too() {
    let server = Server::start("[limits]\nmax_errors = 100\n");
    let mut client = Client::connect(&server.ws_url("encoding=msgpack")).await;
    assert_eq!(client.recv_msgpack().await["type"], "auth_required");
    client
        .send_msgpack(&json!({"type": "auth", "token": token("ann", "user", &[]), "ref": "a"}))
        .await;
    let ok = client.recv_msgpack().await;
    assert_eq!(ok["type"], "auth_success");
    assert_eq!(ok["ref"], "a");

    client.send_binary(b"\xc1\xc1 not msgpack").await;
    let error = client.recv_msgpack().await;
    assert_eq!(error["data"]["code"], "invalid_message");
    client.send_msgpack(&json!({"type": "teleport"})).await;
    assert_eq!(client.recv_msgpack().await["data"]["code"], "unknown_type");
    client
        .send_msgpack(&json!({"type": "ping", "ref": 2}))
        .await;
    assert_eq!(client.recv_msgpack().await["type"], "pong");
}

#[tokio::test]
async fn an_unknown_encoding_is_refused_before_the_upgrade() {
    let server = Server::start("");
    let (status, body) = refused_status(
        &server.ws_url(&format!("encoding=xml&token={}", token("x", "user", &[]))),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_message");
}
