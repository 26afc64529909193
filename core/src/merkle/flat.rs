//! flat-tree index math (JS `flat-tree`): the nodes of a binary Merkle tree numbered in-order.
//!
//! Leaves (blocks) are even: block `n` is node `2n`. Parents are odd. A node's depth is the
//! number of trailing 1 bits of its index; node `(depth, offset)` is `(2·offset + 1)·2^depth − 1`.
//! All functions are total on `u64` (no overflow panics); callers keep indices below 2^62.

/// Depth of a node (0 for leaves).
pub fn depth(i: u64) -> u32 {
    (!i).trailing_zeros()
}

/// Offset of a node within its depth.
pub fn offset(i: u64) -> u64 {
    i.checked_shr(depth(i) + 1).unwrap_or(0)
}

/// The node at `depth`, `offset`.
pub fn index(depth: u32, offset: u64) -> u64 {
    offset
        .wrapping_mul(2)
        .wrapping_add(1)
        .wrapping_shl(depth)
        .wrapping_sub(1)
}

/// The parent of a node.
pub fn parent(i: u64) -> u64 {
    let d = depth(i);
    index(d + 1, offset(i) >> 1)
}

/// The other child of this node's parent.
pub fn sibling(i: u64) -> u64 {
    let d = depth(i);
    index(d, offset(i) ^ 1)
}

/// The two children of a parent node, or `None` for a leaf.
pub fn children(i: u64) -> Option<(u64, u64)> {
    let d = depth(i);
    if d == 0 {
        return None;
    }
    let half = 1u64.wrapping_shl(d - 1);
    Some((i.wrapping_sub(half), i.wrapping_add(half)))
}

/// The first leaf (as a node index) under `i`.
pub fn left_span(i: u64) -> u64 {
    let d = depth(i);
    if d == 0 {
        i
    } else {
        offset(i).wrapping_shl(d + 1)
    }
}

/// The last leaf (as a node index) under `i`.
pub fn right_span(i: u64) -> u64 {
    let d = depth(i);
    if d == 0 {
        i
    } else {
        offset(i)
            .wrapping_add(1)
            .wrapping_shl(d + 1)
            .wrapping_sub(2)
    }
}

/// Number of blocks under `i`.
pub fn count_leaves(i: u64) -> u64 {
    1u64.checked_shl(depth(i)).unwrap_or(0)
}

/// Whether node `i` spans node `j`.
pub fn contains(i: u64, j: u64) -> bool {
    left_span(i) <= j && j <= right_span(i)
}

/// The roots of a tree of `length` blocks, left to right (`fullRoots(2·length)` in JS).
pub fn full_roots(length: u64) -> Vec<u64> {
    let mut roots = Vec::with_capacity(length.count_ones() as usize);
    let mut offset = 0u64; // in leaves
    let mut left = length;
    while left > 0 {
        let f = 1u64 << (63 - left.leading_zeros());
        roots.push(offset.wrapping_mul(2).wrapping_add(f - 1));
        offset += f;
        left -= f;
    }
    roots
}

/// The root (of a tree of `length` blocks) that spans node `i`, if any.
pub fn root_of(i: u64, length: u64) -> Option<u64> {
    full_roots(length).into_iter().find(|&r| contains(r, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_js_flat_tree() {
        assert_eq!(depth(0), 0);
        assert_eq!(depth(1), 1);
        assert_eq!(depth(3), 2);
        assert_eq!(depth(7), 3);
        assert_eq!(parent(0), 1);
        assert_eq!(parent(2), 1);
        assert_eq!(parent(1), 3);
        assert_eq!(parent(5), 3);
        assert_eq!(sibling(0), 2);
        assert_eq!(sibling(5), 1);
        assert_eq!(sibling(8), 10);
        assert_eq!(children(3), Some((1, 5)));
        assert_eq!(children(0), None);
        assert_eq!(left_span(7), 0);
        assert_eq!(right_span(7), 14);
        assert_eq!(left_span(23), 16);
        assert_eq!(right_span(23), 30);
        assert_eq!(count_leaves(15), 16);
        assert_eq!(count_leaves(4), 1);
        assert_eq!(full_roots(5), vec![3, 8]);
        assert_eq!(full_roots(17), vec![15, 32]);
    }

    #[test]
    fn roots_of_100() {
        // 100 = 64 + 32 + 4: leaves [0,64) [64,96) [96,100).
        assert_eq!(full_roots(100), vec![63, 159, 195]);
        assert_eq!(full_roots(0), Vec::<u64>::new());
        assert_eq!(full_roots(1), vec![0]);
        assert_eq!(full_roots(3), vec![1, 4]);
    }

    proptest! {
        #[test]
        fn parent_child_consistent(i in 0u64..(1 << 40)) {
            let p = parent(i);
            let (l, r) = children(p).unwrap();
            prop_assert!(l == i || r == i);
            prop_assert_eq!(sibling(sibling(i)), i);
            prop_assert!(contains(p, i));
            prop_assert_eq!(index(depth(i), offset(i)), i);
        }

        #[test]
        fn roots_cover_length(n in 0u64..(1 << 40)) {
            let roots = full_roots(n);
            let total: u64 = roots.iter().map(|&r| count_leaves(r)).sum();
            prop_assert_eq!(total, n);
            let mut next = 0;
            for r in roots {
                prop_assert_eq!(left_span(r), next);
                next = right_span(r) + 2;
            }
        }
    }
}
