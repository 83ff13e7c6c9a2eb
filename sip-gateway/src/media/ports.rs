//! The RTP port allocator: hands out even/odd port pairs (RTP on the even port, RTCP on the
//! next odd one, RFC 3550 section 11) from the configured range, and takes them back on
//! hangup.
//!
//! Allocation is round-robin from where the last one ended rather than "lowest free": a port
//! released a moment ago may still receive late packets from the previous call, so reusing
//! it last makes a stray packet reaching the wrong call as unlikely as the range allows.

use std::collections::VecDeque;

/// Why a port pair could not be allocated or the range is unusable.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Every pair of the range is in use: the call must be refused (503/488).
    #[error("all RTP port pairs in the range are in use")]
    Exhausted,
    /// The configured range holds no complete even/odd pair.
    #[error("RTP port range {start}..={end} holds no even/odd pair")]
    EmptyRange {
        /// First port configured.
        start: u16,
        /// Last port configured.
        end: u16,
    },
    /// A port was released that is not allocated (a double release is our bug; reported,
    /// not panicked on, so a hangup race cannot bring the relay down).
    #[error("port {0} was released but is not allocated")]
    NotAllocated(u16),
}

/// An allocated pair: `rtp` is even, RTCP is `rtp + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortPair {
    /// The even RTP port.
    pub rtp: u16,
}

impl PortPair {
    /// The RTCP port, one above RTP.
    pub fn rtcp(self) -> u16 {
        self.rtp | 1
    }
}

/// Allocates [`PortPair`]s from an inclusive port range.
#[derive(Debug)]
pub struct PortAllocator {
    first: u16,
    free: VecDeque<u16>,
    in_use: Vec<bool>,
}

impl PortAllocator {
    /// A pool over `start..=end`; odd starts and even ends are trimmed to whole pairs.
    pub fn new(start: u16, end: u16) -> Result<PortAllocator, PortError> {
        let first = start
            .checked_add(start % 2)
            .ok_or(PortError::EmptyRange { start, end })?;
        let last_rtp = if end % 2 == 1 {
            end - 1
        } else {
            end.saturating_sub(2)
        };
        if first == 0 || first > last_rtp || end < 1 {
            return Err(PortError::EmptyRange { start, end });
        }
        let free: VecDeque<u16> = (first..=last_rtp).step_by(2).collect();
        let in_use = vec![false; free.len()];
        Ok(PortAllocator {
            first,
            free,
            in_use,
        })
    }

    /// Takes the least recently released free pair.
    pub fn allocate(&mut self) -> Result<PortPair, PortError> {
        let rtp = self.free.pop_front().ok_or(PortError::Exhausted)?;
        let i = self.index(rtp);
        self.in_use[i] = true;
        Ok(PortPair { rtp })
    }

    /// Returns `pair` to the pool (at the back of the rotation).
    pub fn release(&mut self, pair: PortPair) -> Result<(), PortError> {
        let slot = pair
            .rtp
            .checked_sub(self.first)
            .map(|d| usize::from(d / 2))
            .filter(|&i| pair.rtp.is_multiple_of(2) && i < self.in_use.len());
        match slot {
            Some(i) if self.in_use[i] => {
                self.in_use[i] = false;
                self.free.push_back(pair.rtp);
                Ok(())
            }
            _ => Err(PortError::NotAllocated(pair.rtp)),
        }
    }

    /// Pairs currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use.len() - self.free.len()
    }

    /// Pairs in the range.
    pub fn capacity(&self) -> usize {
        self.in_use.len()
    }

    fn index(&self, rtp: u16) -> usize {
        usize::from((rtp - self.first) / 2)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pairs_are_even_and_within_the_range() {
        let mut p = PortAllocator::new(20001, 20010).unwrap();
        let got: Vec<u16> = (0..4).map(|_| p.allocate().unwrap().rtp).collect();
        assert_eq!(got, [20002, 20004, 20006, 20008]);
        assert_eq!(p.allocate(), Err(PortError::Exhausted));
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn released_pairs_come_back_last() {
        let mut p = PortAllocator::new(30000, 30007).unwrap();
        let a = p.allocate().unwrap();
        p.release(a).unwrap();
        assert_eq!(p.allocate().unwrap().rtp, 30002);
        assert_eq!(p.allocate().unwrap().rtp, 30004);
        assert_eq!(p.allocate().unwrap().rtp, 30006);
        assert_eq!(p.allocate().unwrap(), a);
        assert_eq!(p.allocate(), Err(PortError::Exhausted));
    }

    #[test]
    fn bad_releases_are_errors() {
        let mut p = PortAllocator::new(30000, 30003).unwrap();
        let a = p.allocate().unwrap();
        p.release(a).unwrap();
        assert_eq!(p.release(a), Err(PortError::NotAllocated(30000)));
        assert_eq!(
            p.release(PortPair { rtp: 30001 }),
            Err(PortError::NotAllocated(30001))
        );
        assert_eq!(
            p.release(PortPair { rtp: 2 }),
            Err(PortError::NotAllocated(2))
        );
        assert_eq!(
            p.release(PortPair { rtp: 65534 }),
            Err(PortError::NotAllocated(65534))
        );
    }

    #[test]
    fn ranges_without_a_pair_are_rejected() {
        assert!(PortAllocator::new(30001, 30001).is_err());
        assert!(PortAllocator::new(30000, 30000).is_err());
        assert!(PortAllocator::new(0, 1).is_err());
        assert!(PortAllocator::new(65535, 65535).is_err());
        assert_eq!(PortAllocator::new(65534, 65535).unwrap().capacity(), 1);
        assert_eq!(PortAllocator::new(30000, 30001).unwrap().capacity(), 1);
    }
}
