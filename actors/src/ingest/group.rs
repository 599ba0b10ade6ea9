//! Ownership groups: the `P` partitions of an inbox dealt to `G` groups (partition `p` belongs
//! to group `p mod G`). A group is read by one durable consumer filtered to its partitions, and
//! it is the unit a node owns (and that scale-out will move between nodes).

use std::fmt;

use playhead_proto::subjects::Inbox;

/// One ownership group of one inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupId {
    pub inbox: Inbox,
    pub index: u32,
    pub groups: u32,
}

impl GroupId {
    /// Every group of `inbox` when it is split into `groups`.
    pub fn all(inbox: Inbox, groups: u32) -> impl Iterator<Item = GroupId> {
        (0..groups).map(move |index| GroupId {
            inbox,
            index,
            groups,
        })
    }

    /// The durable consumer that reads this group.
    pub fn consumer_name(&self) -> String {
        self.inbox.consumer_name(self.index, self.groups)
    }

    /// The partitions (out of `partitions`) this group owns.
    pub fn partitions(&self, partitions: u32) -> impl Iterator<Item = u32> + '_ {
        (self.index..partitions).step_by(self.groups as usize)
    }

    /// The consumer's `filter_subjects`: one per partition, or none when a single group owns
    /// the whole inbox (an unfiltered consumer is the broker's cheapest).
    pub fn filter_subjects(&self, partitions: u32) -> Vec<String> {
        if self.groups == 1 {
            return Vec::new();
        }
        self.partitions(partitions)
            .map(|partition| self.inbox.partition_filter(partition))
            .collect()
    }

    /// The key of this group's ownership lease.
    pub fn lease_key(&self) -> String {
        format!("{}.g{}of{}", self.inbox.label(), self.index, self.groups)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}of{}", self.inbox.label(), self.index, self.groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_belongs_to_exactly_one_group() {
        for groups in [1, 3, 4, 7, 64] {
            let mut owners = vec![0; 64];
            for group in GroupId::all(Inbox::User, groups) {
                for partition in group.partitions(64) {
                    owners[partition as usize] += 1;
                    assert_eq!(partition % groups, group.index);
                }
            }
            assert!(
                owners.iter().all(|&count| count == 1),
                "{groups}: {owners:?}"
            );
        }
    }

    #[test]
    fn a_single_group_reads_the_whole_inbox_unfiltered() {
        let group = GroupId::all(Inbox::Station, 1).next().unwrap();
        assert!(group.filter_subjects(64).is_empty());
        let group = GroupId::all(Inbox::Station, 4).nth(1).unwrap();
        let filters = group.filter_subjects(8);
        assert_eq!(
            filters,
            vec!["playhead-in.station.1.>", "playhead-in.station.5.>"]
        );
    }

    #[test]
    fn names_are_distinct_per_group_and_count() {
        let a = GroupId::all(Inbox::User, 4).next().unwrap();
        let b = GroupId::all(Inbox::User, 8).next().unwrap();
        assert_ne!(a.consumer_name(), b.consumer_name());
        assert_ne!(a.lease_key(), b.lease_key());
        assert!(Inbox::User.is_playhead_consumer(&a.consumer_name()));
        assert!(Inbox::User.is_playhead_consumer("user-p003"));
        assert!(!Inbox::User.is_playhead_consumer("station-g000of004"));
        assert!(!Inbox::User.is_playhead_consumer("audit"));
    }
}
