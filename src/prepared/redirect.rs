//! What a [`Prepared`](crate::Prepared) child's stdin, stdout and stderr
//! are.

/// Where a [`Prepared`](crate::Prepared) child's standard stream goes:
/// std's `Stdio`, for a description started many times (named apart so
/// the two can be imported together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redirect {
    /// The parent's own descriptor (0, 1 or 2), as it is at each start.
    /// The default for every stream, as with std's `Command::spawn`.
    #[default]
    Inherit,
    /// `/dev/null`, opened once per `Prepared` (read-write) and shared by
    /// every start.
    Null,
    /// A new pipe per start; the parent's end comes back in
    /// [`Spawned`](crate::Spawned), non-blocking and close-on-exec. The
    /// child's end goes through a descriptor slot the `Prepared` reserves
    /// once (see [`Prepared`](crate::Prepared)'s *Descriptors*).
    Piped,
}
