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
}

/// The canonical protocol.
pub const CANONICAL: Spelling = Spelling {
    name: "canonical",
    data: "data",
    id: "id",
    welcome_message: None,
};

/// Pulse (`profile = "pulse"`): every frame carries its payload under `payload`.
pub const PULSE: Spelling = Spelling {
    name: "pulse",
    data: "payload",
    id: "id",
    welcome_message: None,
};

/// The user-management API (`profile = "users-api"`): the welcome says hello.
pub const USERS_API: Spelling = Spelling {
    name: "users-api",
    data: "data",
    id: "id",
    welcome_message: Some("Welcome to WebSocket real-time updates"),
};

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
