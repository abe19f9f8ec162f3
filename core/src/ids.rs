//! Newtype ids. Users, groups and messages are integers (JSON numbers, below 2^53);
//! devices are opaque strings; a conversation is a direct pair or a group.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident, $ty:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $ty);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

int_id!(/// A registered user.
    UserId, i64);
int_id!(/// A group chat.
    GroupId, i64);
int_id!(/// A stored message; ids grow in commit order, so they double as sync cursors.
    MessageId, i64);
int_id!(/// One WebSocket connection, unique within a node's lifetime.
    ConnId, u64);

/// A device: the session created by one login, or an id the client chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub String);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A gateway node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conversation: the pair of a 1:1 chat (smaller id first) or a group.
///
/// Its string form (`d:1:2`, `g:7`) is the `chatId` clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConversationId {
    /// A 1:1 chat; `.0 <= .1`.
    Direct(UserId, UserId),
    /// A group chat.
    Group(GroupId),
}

impl ConversationId {
    /// The direct conversation between two users, in canonical order.
    pub fn direct(a: UserId, b: UserId) -> Self {
        if a <= b {
            Self::Direct(a, b)
        } else {
            Self::Direct(b, a)
        }
    }

    /// Parses the string form produced by `Display`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let conv = match parts.next()? {
            "d" => {
                let a = parts.next()?.parse().ok()?;
                let b = parts.next()?.parse().ok()?;
                Self::direct(UserId(a), UserId(b))
            }
            "g" => Self::Group(GroupId(parts.next()?.parse().ok()?)),
            _ => return None,
        };
        parts.next().is_none().then_some(conv)
    }

    /// For a direct chat, the participant who is not `me`.
    pub fn peer_of(&self, me: UserId) -> Option<UserId> {
        match *self {
            Self::Direct(a, b) if a == me => Some(b),
            Self::Direct(a, _) => Some(a),
            Self::Group(_) => None,
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct(a, b) => write!(f, "d:{a}:{b}"),
            Self::Group(g) => write!(f, "g:{g}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_round_trip() {
        for c in [ConversationId::direct(UserId(9), UserId(3)), ConversationId::Group(GroupId(4))] {
            assert_eq!(ConversationId::parse(&c.to_string()), Some(c));
        }
        assert_eq!(ConversationId::direct(UserId(9), UserId(3)).to_string(), "d:3:9");
        assert_eq!(ConversationId::parse("d:1"), None);
        assert_eq!(ConversationId::parse("g:1:2"), None);
        assert_eq!(ConversationId::parse("x:1"), None);
    }
}
