//! CPU-bound work on a large batch split in two halves that run at once: the one shared way to
//! do it.

/// From this many items on, `in_halves` splits the batch: below it, handing a half to another
/// thread costs more than the half of the work it takes over. An item is one resource's worth of
/// work (`in_halves_weighted` counts a row that yields several as several).
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
    in_halves_weighted(items, 1, work)
}

/// `in_halves` over items that each cost `weight` items' work: an unpivoted vitals row yields
/// up to eight Observations, so a page of 170 rows is worth splitting.
pub fn in_halves_weighted<T, R>(
    items: Vec<T>,
    weight: usize,
    work: impl Fn(usize, Vec<T>) -> R + Sync,
) -> Vec<R>
where
    T: Send,
    R: Send,
{
    let span = tracing::Span::current();
    let work = |first: usize, items: Vec<T>| {
        let _entered = span.enter();
        work(first, items)
    };
    if items.len().saturating_mul(weight.max(1)) < MIN_SPLIT || items.len() < 2 {
        return vec![work(0, items)];
    }
    let mut first = items;
    let second = first.split_off(first.len().div_ceil(2));
    let second_index = first.len();
    let (mine, theirs) = rayon::join(|| work(0, first), || work(second_index, second));
    vec![mine, theirs]
}

/// `in_halves` on rayon's pool, awaited: the calling task's thread is free meanwhile, to drive
/// the task's other futures (an export reads its next page while it writes this one) or other
/// tasks. `in_halves` called from an async task blocks its thread until both halves are done.
pub async fn in_halves_detached<T, R>(
    items: Vec<T>,
    work: impl Fn(usize, Vec<T>) -> R + Send + Sync + 'static,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    let (done, result) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _entered = span.enter();
        let halves =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_halves(items, work)));
        // The receiver is gone only when the awaiting task was dropped: nobody wants the result.
        let _ = done.send(halves);
    });
    match result.await {
        Ok(Ok(halves)) => halves,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => unreachable!("the pool runs every job it is given, so the sender is used"),
    }
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
        // 40 rows that yield eight resources each are 320 resources' work: split.
        let rows: Vec<usize> = (0..40).collect();
        let parts = in_halves_weighted(rows, 8, |first, rows| (first, rows.len()));
        assert_eq!(parts, [(0, 20), (20, 20)]);
        assert_eq!(in_halves_weighted(vec![1], 1000, |_, rows| rows.len()), [1]);
    }
}

#[tokio::test]
async fn detached_halves_keep_the_order_and_pass_on_a_panic() {
    let items: Vec<usize> = (0..1001).collect();
    let parts = in_halves_detached(items, |first, items| (first, items)).await;
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].0, 501);
    let joined: Vec<usize> = parts.into_iter().flat_map(|(_, items)| items).collect();
    assert_eq!(joined, (0..1001).collect::<Vec<_>>());
    let caught = tokio::spawn(in_halves_detached(
        (0..MIN_SPLIT).collect::<Vec<usize>>(),
        |first, _| assert!(first == 0, "the second half fails"),
    ))
    .await;
    assert!(caught.is_err_and(|error| error.is_panic()));
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
