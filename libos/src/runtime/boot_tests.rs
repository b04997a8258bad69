//! Boot tests of the runtime: frames, heap, timer, device tree, interrupt controller, entry.

use super::frames::HEAP_GROWN_BYTES;
use super::*;
use crate::mm::frames::{AllocError, FrameError, OutOfMemory, FRAME_SIZE, MAX_ORDER};
use alloc::boxed::Box;
use alloc::vec::Vec;
use arch::board::{phys_to_virt, BOARD};
use core::sync::atomic::Ordering;

crate::boot_test! {
    /// Every order 0..=10 allocates a naturally aligned block and gives it back.
    fn frame_orders_are_aligned_and_returned() {
        let before = frames_free_or_heap();
        let mut blocks = Vec::new();
        for order in 0..=MAX_ORDER {
            let pa = alloc_frames(order).expect("RAM for every order");
            assert_eq!(pa % ((FRAME_SIZE as u64) << order), 0, "order {order} block at {pa:#x} misaligned");
            assert_eq!(frames_free_or_heap(), before - blocks.iter().map(|&(_, o)| 1usize << o).sum::<usize>() - (1 << order));
            blocks.push((pa, order));
        }
        // Distinct, non-overlapping blocks, and really memory: write and read back through the
        // kernel map.
        for (i, &(pa, order)) in blocks.iter().enumerate() {
            let len = FRAME_SIZE << order;
            for &(other, o2) in &blocks[i + 1..] {
                let l2 = (FRAME_SIZE << o2) as u64;
                assert!(pa + len as u64 <= other || other + l2 <= pa, "blocks overlap");
            }
            let p = phys_to_virt(pa as usize) as *mut u64;
            // SAFETY: the block is ours; first and last word are inside it.
            unsafe {
                p.write_volatile(pa ^ 0x5a5a);
                p.add(len / 8 - 1).write_volatile(!pa);
                assert_eq!(p.read_volatile(), pa ^ 0x5a5a);
                assert_eq!(p.add(len / 8 - 1).read_volatile(), !pa);
            }
        }
        for (pa, order) in blocks {
            free_frames(pa, order).unwrap();
        }
        assert_eq!(frames_free_or_heap(), before);
    }
}

crate::boot_test! {
    /// Exhausting RAM returns OutOfMemory; two freed buddies merge into one order-1 block; all
    /// memory comes back.
    fn frame_exhaustion_and_coalescing() {
        let before = frames_free_or_heap();
        // Set one order-1 block aside, then take everything else.
        let pair = alloc_frames(1).unwrap();
        let mut held: Vec<(u64, usize)> = Vec::with_capacity(4096);
        for order in (0..=MAX_ORDER).rev() {
            while let Ok(pa) = alloc_frames(order) {
                held.push((pa, order));
            }
        }
        assert_eq!(frame_counts().0, 0, "every frame handed out");
        assert_eq!(alloc_frames(0), Err(AllocError::OutOfMemory(OutOfMemory)));
        // Only the pair is free now: it splits into its two buddies...
        free_frames(pair, 1).unwrap();
        let a = alloc_frames(0).unwrap();
        let b = alloc_frames(0).unwrap();
        assert_eq!((a.min(b), a.max(b)), (pair, pair + FRAME_SIZE as u64));
        // ...one lone free frame is not an order-1 block...
        free_frames(pair + FRAME_SIZE as u64, 0).unwrap();
        assert_eq!(alloc_frames(1), Err(AllocError::OutOfMemory(OutOfMemory)));
        // ...and once both are free they coalesce.
        free_frames(pair, 0).unwrap();
        assert_eq!(alloc_frames(1), Ok(pair), "buddies coalesced");
        held.push((pair, 1));
        for (pa, order) in held {
            free_frames(pa, order).unwrap();
        }
        assert_eq!(frames_free_or_heap(), before);
        let big = alloc_frames(MAX_ORDER).expect("order-10 block after everything was freed");
        free_frames(big, MAX_ORDER).unwrap();
    }
}

crate::boot_test! {
    /// Bad frame-allocator arguments are rejected without changing anything.
    fn frame_bad_arguments() {
        let before = frames_free_or_heap();
        assert_eq!(alloc_frames(MAX_ORDER + 1), Err(AllocError::Invalid(FrameError::OrderTooLarge(MAX_ORDER + 1))));
        assert_eq!(free_frames(0x1000, 3), Err(FrameError::Misaligned(0x1000)));
        assert_eq!(frames_free_or_heap(), before);
    }
}

crate::boot_test! {
    /// The global allocator serves small, large and over-aligned allocations and takes them back.
    fn heap_allocations() {
        let (used_before, _) = heap_usage();
        {
            let v: Vec<u64> = (0..100_000).collect();
            assert_eq!(v.iter().sum::<u64>(), 100_000 * 99_999 / 2);
            #[repr(align(4096))]
            struct Page([u8; 4096]);
            let p = Box::new(Page([7; 4096]));
            assert_eq!(&*p as *const Page as usize % 4096, 0);
            assert!(p.0.iter().all(|&b| b == 7));
            let s = alloc::format!("{}-{}", "tessera", 42);
            assert_eq!(s, "tessera-42");
            assert!(heap_usage().0 >= used_before + 800_000);
        }
        assert_eq!(heap_usage().0, used_before, "heap returns to its previous use");
    }
}

crate::boot_test! {
    /// When the static heap is exhausted the heap grows by taking 4 MiB blocks from the frame
    /// allocator (frames it keeps do not count as leaked).
    fn heap_grows_from_frames() {
        let (used, total_before) = heap_usage();
        // More 1 MiB chunks than the heap has room for now, whatever earlier tests did.
        let n = ((total_before - used) >> 20) + 4;
        let chunks: Vec<Vec<u8>> = (0..n).map(|i| alloc::vec![i as u8; 1 << 20]).collect();
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.iter().step_by(4096).all(|&b| b == i as u8));
        }
        assert!(heap_usage().1 > total_before, "heap grew");
        assert!(HEAP_GROWN_BYTES.load(Ordering::Relaxed) >= 4 << 20);
    }
}

crate::boot_test! {
    /// The heap can grow while the frame allocator (which keeps its free lists on the heap) is
    /// in the middle of an operation: regression test for a deadlock in which the heap's
    /// growth hook called the frame allocator with the heap locked.
    fn heap_grows_during_frame_allocator_work() {
        let grown_before = HEAP_GROWN_BYTES.load(Ordering::Relaxed);
        // Fill the heap past its current size with small objects...
        let (used, total) = heap_usage();
        let mut junk: Vec<Vec<u8>> = Vec::new();
        let mut filled = used;
        while filled < total + (2 << 20) {
            junk.push(alloc::vec![0x5a; 256]);
            filled += 256 + 32;
        }
        // ...then make the frame allocator's free sets grow: scattered frees of single frames.
        let mut frames = Vec::with_capacity(40_000);
        for _ in 0..40_000 {
            frames.push(alloc_frames(0).unwrap());
        }
        for (i, &pa) in frames.iter().enumerate() {
            if i % 2 == 1 {
                free_frames(pa, 0).unwrap();
            }
            if i % 64 == 0 {
                junk.push(alloc::vec![0xa5; 4096]);
            }
        }
        for (i, &pa) in frames.iter().enumerate() {
            if i % 2 == 0 {
                free_frames(pa, 0).unwrap();
            }
        }
        assert!(HEAP_GROWN_BYTES.load(Ordering::Relaxed) > grown_before, "the heap grew during the test");
        assert!(junk.iter().all(|v| v[0] == 0x5a || v[0] == 0xa5));
    }
}

crate::boot_test! {
    /// The virtual counter advances, conversions agree, and a timer interrupt is delivered.
    fn timer_interrupt_fires() {
        let f = arch::timer::frequency();
        assert!(f >= 1_000_000, "counter frequency {f} Hz");
        assert_eq!(arch::timer::ns_to_ticks(1_000_000_000), f);
        let t0 = arch::timer::now_ns();
        arch::timer::spin_ns(200_000);
        let t1 = arch::timer::now_ns();
        assert!(t1 >= t0 + 200_000, "spun {} ns", t1 - t0);
        let fired = timer_fired_count(TimerSlot::User);
        timer_arm(TimerSlot::User, 1_000_000);
        let deadline = arch::timer::now_ns() + 5_000_000_000;
        while timer_fired_count(TimerSlot::User) == fired {
            assert!(arch::timer::now_ns() < deadline, "timer interrupt not delivered within 5 s");
            arch::cpu::wait_for_interrupt();
        }
        let elapsed = arch::timer::now_ns() - t1;
        assert!(elapsed >= 1_000_000, "fired early: after {elapsed} ns");
    }
}

crate::boot_test! {
    /// RAM comes from the device tree (whatever its size: a real Pi 4 has 1 to 8 GiB), holds
    /// the image, stays clear of the device window and, on a Pi, of the VideoCore's memory at
    /// the top of the first GiB; the frame allocator covers exactly the usable part of it.
    fn device_tree_memory_size() {
        let cfg = boot_config();
        assert_eq!(cfg.ram_source, RamSource::DeviceTree, "no device tree found (x0 or board fallback)");
        let ram: u64 = cfg.ram.iter().map(|r| r.size).sum();
        assert!(ram >= 64 << 20, "RAM from the device tree: {:?}", cfg.ram);
        let (img_s, img_e) = arch::boot::image_phys_range();
        assert!(
            cfg.ram.iter().any(|r| r.base <= img_s as u64 && img_e as u64 <= r.end()),
            "the image {img_s:#x}..{img_e:#x} is not inside RAM {:?}",
            cfg.ram
        );
        let (dlo, dhi) = (BOARD.device_window.0 as u64, BOARD.device_window.1 as u64);
        for r in &cfg.ram {
            assert!(r.end() <= dlo || r.base >= dhi, "RAM {r:?} overlaps the device window");
        }
        if cfg.board != "qemu-virt" {
            let first = cfg.ram.iter().min_by_key(|r| r.base).unwrap();
            assert_eq!(first.base, 0, "a Pi's ARM memory starts at 0");
            assert!(first.end() <= 0x3C00_0000, "{first:?} reaches into the VideoCore's memory");
        }
        let usable: u64 = cfg.usable.iter().map(|r| r.size).sum();
        let (_, total) = frame_counts();
        assert_eq!(total as u64 * FRAME_SIZE as u64, usable);
        for r in &cfg.usable {
            assert!(r.end() <= img_s as u64 || r.base >= img_e as u64, "usable {r:?} overlaps the image");
            if let (Some(dtb), Some(dt)) = (cfg.dtb, cfg.dt.as_ref()) {
                let (ds, de) = (dtb as u64, (dtb + dt.total_size) as u64);
                assert!(r.end() <= ds || r.base >= de, "usable {r:?} overlaps the device tree");
            }
        }
    }
}

crate::boot_test! {
    /// The interrupt controller was reset: of all the interrupts the distributor implements,
    /// only the virtual timer is enabled, and nothing but it can be pending or active; on the
    /// Pi 3 every interrupt of the BCM2835 controller is disabled and FIQ routing is off.
    fn interrupt_controller_reset_leaves_only_the_timer() {
        use tock_registers::interfaces::Readable;
        if let Some((d, _)) = arch::irq::gic() {
            let words = arch::gic::lines(d).div_ceil(32) as usize;
            let timer = BOARD.virtual_timer_intid;
            for i in 0..words {
                let expected = if i == (timer / 32) as usize { 1 << (timer % 32) } else { 0 };
                // Whether SGIs (IDs 0..16) can be disabled at all is implementation defined.
                let mask = if i == 0 { 0xFFFF_0000 } else { u32::MAX };
                assert_eq!(d.isenabler[i].get() & mask, expected, "GICD_ISENABLER{i}");
                assert_eq!(d.isactiver[i].get() & !expected, 0, "GICD_ISACTIVER{i}");
                if i > 0 {
                    assert_eq!(d.ispendr[i].get(), 0, "GICD_ISPENDR{i}: shared interrupts pending");
                }
            }
            assert_eq!(d.ctlr.get() & 1, 1, "distributor enabled");
        }
        if let Some(legacy) = arch::irq::bcm2835_legacy() {
            assert_eq!(legacy.enable[0].get(), 0, "IRQ enable 1");
            assert_eq!(legacy.enable[1].get(), 0, "IRQ enable 2");
            assert_eq!(legacy.enable_basic.get() & 0xff, 0, "basic IRQ enable");
            assert_eq!(legacy.fiq_control.get() & 0x80, 0, "FIQ routing off");
        }
    }
}

crate::boot_test! {
    /// The boot path recorded the entry EL the board is documented to use.
    fn entry_exception_level() {
        let el = boot_config().entry_el;
        match boot_config().board {
            "qemu-virt" => assert_eq!(el, 1),
            _ => assert_eq!(el, 2, "Raspberry Pi boards enter at EL2"),
        }
        assert_eq!(arch::cpu::current_el(), 1);
    }
}
