//! The boundary every exported function goes through: panics become an error code,
//! failures set the thread's last-error text, and C arguments are checked and
//! converted (NULL pointers, byte-string paths, output buffers).

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use nix::errno::Errno;

use crate::error::Error;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(text: String) {
    // Interior NULs cannot come from our messages; strip them rather than lose the text.
    let text = CString::new(text.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// The last failure's text on this thread ("" before any failure). The pointer stays
/// valid until the next libnfslock call on this thread that fails.
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The code returned when a bug in the library panicked; the process state is intact
/// (the panic was caught) but the operation's outcome is unknown.
const PANIC_CODE: Errno = Errno::ENOTRECOVERABLE;

/// Runs the body of an exported function: 0 on success, else the error's errno, with
/// the last-error text set. Every `nfslock_*` function returning `int` starts with this.
pub fn ffi_guard(op: &'static str, body: impl FnOnce() -> Result<(), Error>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            set_last_error(e.to_string());
            e.code()
        }
        Err(_) => {
            set_last_error(format!("{op}: internal error (a panic was caught at the C boundary)"));
            PANIC_CODE as i32
        }
    }
}

/// The guard of the hot calls (a shared-memory manager's lock and unlock, a few
/// nanoseconds): `body` returns the code itself, so only an int crosses the unwind
/// boundary (an `Error`-sized result would be copied there on every call), and records
/// a failure with [`failed`].
#[inline]
pub fn ffi_guard_code(op: &'static str, body: impl FnOnce() -> i32) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(code) => code,
        Err(_) => {
            set_last_error(format!("{op}: internal error (a panic was caught at the C boundary)"));
            PANIC_CODE as i32
        }
    }
}

/// Records `e` as the thread's last error and returns its code (for `ffi_guard_code`).
#[cold]
#[inline(never)]
pub fn failed(e: Error) -> i32 {
    set_last_error(e.to_string());
    e.code()
}

/// The code of an `ffi_guard_code` body's slow path.
pub fn code_of(result: Result<(), Error>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

/// The same guard for the functions that return nothing (free): a failure or a panic
/// is still recorded as the thread's last error.
pub fn ffi_guard_void(op: &'static str, body: impl FnOnce() -> Result<(), Error>) {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => set_last_error(e.to_string()),
        Err(_) => set_last_error(format!("{op}: internal error (a panic was caught at the C boundary)")),
    }
}

/// The same guard for the functions that return static text: `fallback` on a panic.
pub fn ffi_guard_ptr(body: impl FnOnce() -> *const c_char, fallback: &'static CStr) -> *const c_char {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback.as_ptr())
}

/// A required path argument: not NULL, not empty. Paths are bytes, not UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives the call.
pub unsafe fn path_arg<'a>(op: &'static str, ptr: *const c_char) -> Result<&'a Path, Error> {
    let bytes = bytes_arg(op, ptr, "path")?;
    if bytes.is_empty() {
        return Err(Error::invalid(op, "path is empty"));
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// A required string argument as bytes.
///
/// # Safety
/// As for [`path_arg`].
pub unsafe fn bytes_arg<'a>(op: &'static str, ptr: *const c_char, name: &str) -> Result<&'a [u8], Error> {
    if ptr.is_null() {
        return Err(Error::invalid(op, format!("{name} is NULL")));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// An optional string argument: NULL is the empty string.
///
/// # Safety
/// As for [`path_arg`].
pub unsafe fn optional_bytes_arg<'a>(ptr: *const c_char) -> &'a [u8] {
    if ptr.is_null() {
        return b"";
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }.to_bytes()
}

/// Checks that an out-pointer is not NULL.
pub fn out_arg<T>(op: &'static str, ptr: *mut T, name: &str) -> Result<(), Error> {
    if ptr.is_null() {
        return Err(Error::invalid(op, format!("{name} is NULL")));
    }
    Ok(())
}

/// Checks that `text` and its terminating NUL fit a caller's buffer of `len` bytes
/// (the buffer itself was checked for NULL with [`out_arg`]).
pub fn check_fits(op: &'static str, path: &Path, len: usize, text: &[u8], name: &str) -> Result<(), Error> {
    if text.contains(&0) {
        return Err(Error::new(Errno::EBADMSG, op, Some(path), format!("the {name} contains a NUL byte")));
    }
    if text.len() >= len {
        let why = format!("the {name} needs {} bytes with its NUL, the buffer has {len}", text.len() + 1);
        return Err(Error::new(Errno::ERANGE, op, Some(path), why));
    }
    Ok(())
}

/// Copies `text` and a NUL into `buf`, which [`check_fits`] accepted.
///
/// # Safety
/// `buf` is valid for `text.len() + 1` bytes.
pub unsafe fn copy_out(buf: *mut c_char, text: &[u8]) {
    // SAFETY: the caller checked the size; the regions cannot overlap (ours is Rust-owned).
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
}
