//! Authorization rules for groups, in one place so every mode applies the same ones.

use crate::ids::UserId;
use crate::store::Group;

/// Members may add anyone.
pub fn can_add(group: &Group, actor: UserId) -> bool {
    group.members.contains(&actor)
}

/// The creator (admin) may remove anyone while still a member; a member may remove themself.
pub fn can_remove(group: &Group, actor: UserId, target: UserId) -> bool {
    group.members.contains(&actor) && (actor == group.created_by || actor == target)
}

/// Only members read or write a group.
pub fn can_read(group: &Group, actor: UserId) -> bool {
    group.members.contains(&actor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::GroupId;

    #[test]
    fn rules() {
        let g = Group { group_id: GroupId(1), group_name: "g".into(), created_by: UserId(1), members: vec![UserId(1), UserId(2)] };
        assert!(can_add(&g, UserId(2)));
        assert!(!can_add(&g, UserId(3)));
        assert!(can_remove(&g, UserId(1), UserId(2)));
        assert!(can_remove(&g, UserId(2), UserId(2)));
        assert!(!can_remove(&g, UserId(2), UserId(1)));
        assert!(!can_remove(&g, UserId(3), UserId(3)));
        let left = Group { members: vec![UserId(2)], ..g.clone() };
        assert!(!can_remove(&left, UserId(1), UserId(2)), "a creator who left is no longer admin");
        assert!(can_read(&g, UserId(2)) && !can_read(&g, UserId(3)));
    }
}
