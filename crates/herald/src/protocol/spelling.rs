//! How a server frame spells its fields: the canonical protocol's names, or those of a
//! compatibility profile (docs/PROTOCOL.md, section 14). A profile is data, applied where a
//! frame is encoded: the hub, the engines and delivery never ask which one is in force, and a
//! publication is still encoded once.
//!
//! The spelling is process-wide: a process runs nodes of one profile (the first node built
//! with a profile sets it; a node with another one refuses to start).

use std::sync::OnceLock;

/// The names a server frame gives its envelope's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spelling {
    /// The profile's name (`canonical` without one).
    pub name: &'static str,
    /// The payload's field: `data`.
    pub data: &'static str,
    /// The publication id's field: `id`.
    pub id: &'static str,
    /// A `message` the welcome's data carries, as the product's README shows it.
    pub welcome_message: Option<&'static str>,
    /// `status` gives `connection_duration` as a duration string (`"5m30s"`), not seconds.
    pub duration_as_text: bool,
    /// `pong` answers a ping whose `data` is a string with `{timestamp: <that string>}`.
    pub pong_echoes_timestamp: bool,
    /// An `error` also carries its message as a top-level `error` string.
    pub error_text: bool,
}

/// The canonical protocol.
pub const CANONICAL: Spelling = Spelling {
    name: "canonical",
    data: "data",
    id: "id",
    welcome_message: None,
    duration_as_text: false,
    pong_echoes_timestamp: false,
    error_text: false,
};

/// Pulse (`profile = "pulse"`): every frame carries its payload under `payload`.
pub const PULSE: Spelling = Spelling {
    name: "pulse",
    data: "payload",
    id: "id",
    welcome_message: None,
    duration_as_text: false,
    pong_echoes_timestamp: false,
    error_text: false,
};

/// The user-management API (`profile = "users-api"`): the welcome says hello.
pub const USERS_API: Spelling = Spelling {
    name: "users-api",
    data: "data",
    id: "id",
    welcome_message: Some("Welcome to WebSocket real-time updates"),
    duration_as_text: false,
    pong_echoes_timestamp: false,
    error_text: false,
};

/// Conduit (`profile = "conduit"`): durations as Go writes them, a pong that echoes the ping.
pub const CONDUIT: Spelling = Spelling {
    name: "conduit",
    data: "data",
    id: "id",
    welcome_message: None,
    duration_as_text: true,
    pong_echoes_timestamp: true,
    error_text: false,
};

/// Auto-Devs (`profile = "auto-devs"`): a publication's id is its `message_id`.
pub const AUTO_DEVS: Spelling = Spelling {
    name: "auto-devs",
    data: "data",
    id: "message_id",
    welcome_message: None,
    duration_as_text: false,
    pong_echoes_timestamp: false,
    error_text: false,
};

/// Cartographer (`profile = "cartographer"`): an error's message is also a top-level `error`.
pub const CARTOGRAPHER: Spelling = Spelling {
    name: "cartographer",
    data: "data",
    id: "id",
    welcome_message: None,
    duration_as_text: false,
    pong_echoes_timestamp: false,
    error_text: true,
};

/// A duration as Go's `time.Duration` prints whole seconds: `"0s"`, `"45s"`, `"5m30s"`,
/// `"1h2m3s"`.
///
/// ```
/// use herald::protocol::spelling::go_duration;
/// assert_eq!(go_duration(std::time::Duration::from_secs(330)), "5m30s");
/// assert_eq!(go_duration(std::time::Duration::from_secs(3723)), "1h2m3s");
/// assert_eq!(go_duration(std::time::Duration::from_millis(900)), "0s");
/// ```
pub fn go_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

static IN_FORCE: OnceLock<Spelling> = OnceLock::new();

/// The spelling of this process's frames.
pub fn spelling() -> &'static Spelling {
    IN_FORCE.get().unwrap_or(&CANONICAL)
}

/// Puts `spelling` in force for this process; an error if frames are already spelled another
/// way (a node of another profile runs here).
pub fn set_spelling(spelling: Spelling) -> Result<(), String> {
    let in_force = IN_FORCE.get_or_init(|| spelling);
    if *in_force == spelling {
        return Ok(());
    }
    Err(format!(
        "this process already speaks the {} protocol: one process runs nodes of one profile",
        in_force.name
    ))
}
