//! Licence seats as each product reports them.
