//! CPU-bound work on a large batch split in two halves that run at once: the one shared way to
//! do it.

/// From this many items on, `in_halves` splits the batch: below it, handing a half to another
/// thread costs more than the half of the work it takes over.
pub const MIN_SPLIT: usize = 256;

/// `work(first_index, items)` over `items`, in two halves at once once there are `MIN_SPLIT`
/// items or more, otherwise in one call. The results come back in order. The halves run on
/// rayon's pool of long-lived threads (one per core), not on threads started for the batch:
/// a new thread costs its stack's page faults and a fresh allocator heap, which for export pages
/// was about a tenth of the CPU. When no other pool thread is free, one thread does both halves.
/// Each half runs in the caller's tracing span, so what it logs keeps the request's fields. A
/// panic in either half is resumed on the caller's thread.
pub fn in_halves<T, R>(items: Vec<T>, work: impl Fn(usize, Vec<T>) -> R + Sync) -> Vec<R>
where
    T: Send,
    R: Send,
{
    let span = tracing::Span::current();
    let work = |first: usize, items: Vec<T>| {
        let _entered = span.enter();
        work(first, items)
    };
    if items.len() < MIN_SPLIT {
        return vec![work(0, items)];
    }
    let mut first = items;
    let second = first.split_off(first.len().div_ceil(2));
    let second_index = first.len();
    let (mine, theirs) = rayon::join(|| work(0, first), || work(second_index, second));
    vec![mine, theirs]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_keep_the_order_and_the_indices() {
        for count in [0, 1, MIN_SPLIT - 1, MIN_SPLIT, 1001] {
            let items: Vec<usize> = (0..count).collect();
            let parts = in_halves(items, |first, items| {
                assert!(
                    items
                        .iter()
                        .enumerate()
                        .all(|(offset, &i)| i == first + offset)
                );
                (first, items)
            });
            assert_eq!(parts.len(), if count < MIN_SPLIT { 1 } else { 2 });
            let joined: Vec<usize> = parts.into_iter().flat_map(|(_, items)| items).collect();
            assert_eq!(joined, (0..count).collect::<Vec<_>>());
        }
    }
}

#[test]
fn a_panic_in_a_half_reaches_the_caller() {
    let caught = std::panic::catch_unwind(|| {
        in_halves((0..MIN_SPLIT).collect::<Vec<usize>>(), |first, _| {
            assert!(first == 0, "the second half fails");
        })
    });
    assert!(caught.is_err());
}
