//! A producer/consumer pipeline over JoinableQueues.
//!
//! Three stages, as Python writes them with `manager.JoinableQueue()`: a producer puts
//! numbers on `numbers`; three workers take each number, square it and hand it on to
//! `squares`; one consumer adds the squares up. Each stage calls `task_done()` for
//! every item it finished, so `join()` on a queue returns once everything put on it
//! has been handled — the producer knows when the pipeline has drained without
//! counting anything itself. Bounded queues give backpressure: the producer waits
//! when the workers fall behind.
//!
//! The stages are tasks of one program here; as processes (see `shared_counter`) or
//! on other hosts (see `master_worker`) the code is the same.
//!
//! ```text
//! cargo run --example pipeline
//! ```

use std::error::Error;

use agora::EmbeddedManager;

const COUNT: u64 = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let manager = EmbeddedManager::start().await?;
    let numbers = manager.joinable_queue::<u64>("numbers", 8).await?;
    let squares = manager.joinable_queue::<u64>("squares", 8).await?;
    let total = manager.value::<u64>("total", &0).await?;

    // Stage 2: three workers square what they take.
    for _ in 0..3 {
        let (numbers, squares) = (numbers.clone(), squares.clone());
        tokio::spawn(async move {
            while let Ok(n) = numbers.get().await {
                squares.put(&(n * n)).await?;
                numbers.task_done().await?;
            }
            Ok::<_, agora_client::Error>(())
        });
    }
    // Stage 3: one consumer adds the squares up.
    {
        let (squares, total) = (squares.clone(), total.clone());
        tokio::spawn(async move {
            while let Ok(square) = squares.get().await {
                total.add(&square).await?;
                squares.task_done().await?;
            }
            Ok::<_, agora_client::Error>(())
        });
    }

    // Stage 1: produce, then wait for the pipeline to drain, stage by stage.
    for n in 1..=COUNT {
        numbers.put(&n).await?;
    }
    numbers.join().await?;
    squares.join().await?;

    let sum = total.get().await?;
    let expected = COUNT * (COUNT + 1) * (2 * COUNT + 1) / 6;
    println!("sum of squares 1..={COUNT} = {sum} (expected {expected})");
    // Shutting the queues down ends the stages' loops (their get fails).
    numbers.shutdown(false).await?;
    squares.shutdown(false).await?;
    manager.shutdown().await;
    if sum != expected {
        return Err("the pipeline lost or doubled an item".into());
    }
    Ok(())
}
