//! Boot tests of the adapter between the memory manager and the machine.

use crate::mm::space::Machine;
use crate::mm::PhysAddr;
use crate::platform::TargetMachine;
use crate::runtime;

crate::boot_test! {
    /// Zeroing a frame (with `DC ZVA` where the CPU allows it) clears exactly the range asked for,
    /// aligned or not.
    fn zeroing_clears_exactly_the_range() {
        let pa = runtime::alloc_frames(1).expect("two frames");
        let mut m = TargetMachine;
        m.write_bytes(PhysAddr(pa), &[0xa5; 8192]);
        m.zero(PhysAddr(pa), 4096);
        let mut buf = [0u8; 8192];
        m.read_bytes(PhysAddr(pa), &mut buf);
        assert!(buf[..4096].iter().all(|&b| b == 0), "the first frame is zero");
        assert!(buf[4096..].iter().all(|&b| b == 0xa5), "the second frame is untouched");
        m.write_bytes(PhysAddr(pa), &[0x5a; 8192]);
        m.zero(PhysAddr(pa + 100), 300);
        m.read_bytes(PhysAddr(pa), &mut buf);
        assert!(buf[..100].iter().all(|&b| b == 0x5a));
        assert!(buf[100..400].iter().all(|&b| b == 0));
        assert!(buf[400..].iter().all(|&b| b == 0x5a));
        runtime::free_frames(pa, 1).unwrap();
    }
}
