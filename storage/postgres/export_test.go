package postgres

import "github.com/jackc/pgx/v5"

// WithSerializable runs Updates at SERIALIZABLE instead of READ COMMITTED
// with row locks: the alternative the package documentation measures.
func WithSerializable() Option { return func(o *options) { o.iso = pgx.Serializable } }
