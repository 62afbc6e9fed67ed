//! One helper for the std mutexes Herald holds only for a few field or map operations.

/// A std mutex's guard, poisoned or not: every critical section in Herald is a few map or
/// field operations that cannot panic half-way, so a poisoned lock is still consistent.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
