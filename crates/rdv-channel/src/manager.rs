//! [`ChannelManager`]: the channels of one authority, by (context, peer),
//! bounded.

use hashbrown::HashMap;
use rdv_context::{AuthorityId, ContextId, Epoch};

use crate::channel::SecureChannel;

/// Default bound on channels.
pub const DEFAULT_MAX_CHANNELS: usize = 1024;

/// Why a channel was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The manager is full even after pruning finished channels.
    #[error("channel manager full ({0} channels)")]
    Full(usize),
}

/// The channels of one authority (the seed's `ChannelManager`).
#[derive(Debug)]
pub struct ChannelManager {
    channels: HashMap<(ContextId, AuthorityId), SecureChannel>,
    max: usize,
}

impl Default for ChannelManager {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelManager {
    /// A manager of at most [`DEFAULT_MAX_CHANNELS`].
    pub fn new() -> Self {
        Self::with_capacity_limit(DEFAULT_MAX_CHANNELS)
    }
    /// A manager of at most `max` channels.
    pub fn with_capacity_limit(max: usize) -> Self {
        Self {
            channels: HashMap::new(),
            max: max.max(1),
        }
    }
    /// Registers `channel`, replacing (and returning) the one with the same
    /// context and peer. When full, finished channels are pruned first.
    pub fn register(
        &mut self,
        channel: SecureChannel,
    ) -> Result<Option<SecureChannel>, ManagerError> {
        let key = (channel.context_id(), channel.remote());
        if !self.channels.contains_key(&key) && self.channels.len() >= self.max {
            self.prune();
            if self.channels.len() >= self.max {
                return Err(ManagerError::Full(self.max));
            }
        }
        Ok(self.channels.insert(key, channel))
    }
    /// The channel with `peer` in `context`.
    pub fn find_by_context_peer(
        &self,
        context: ContextId,
        peer: AuthorityId,
    ) -> Option<&SecureChannel> {
        self.channels.get(&(context, peer))
    }
    /// The same, mutably.
    pub fn find_mut(
        &mut self,
        context: ContextId,
        peer: AuthorityId,
    ) -> Option<&mut SecureChannel> {
        self.channels.get_mut(&(context, peer))
    }
    /// Marks every live channel of `context` older than `new_epoch` for
    /// rotation; returns their peers.
    pub fn advance_epoch(&mut self, context: ContextId, new_epoch: Epoch) -> Vec<AuthorityId> {
        let mut due = Vec::new();
        for ((c, peer), ch) in &mut self.channels {
            if *c == context && !ch.is_finished() && ch.epoch() < new_epoch {
                ch.mark_rotation_due(new_epoch);
                due.push(*peer);
            }
        }
        due
    }
    /// Drops closed and failed channels; returns how many.
    pub fn prune(&mut self) -> usize {
        let before = self.channels.len();
        self.channels.retain(|_, c| !c.is_finished());
        before - self.channels.len()
    }
    /// How many channels.
    pub fn len(&self) -> usize {
        self.channels.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}
