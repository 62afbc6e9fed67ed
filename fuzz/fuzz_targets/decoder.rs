//! Fuzzes the client command decoder: any bytes a client can send in a text frame.
#![no_main]

use herald::protocol::{ErrorCode, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 (the WebSocket layer closes with 1007 otherwise).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(rejection) = Request::parse(text) {
        assert!(matches!(
            rejection.code,
            ErrorCode::InvalidMessage | ErrorCode::UnknownType
        ));
    }
});
