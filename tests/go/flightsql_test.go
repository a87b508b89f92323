// The Arrow Go Flight SQL database/sql driver (what Go-based dashboards use) against a
// running Quiver: queries, parameters, column types and grants. Run by
// tests/python/test_go.py, which starts the server and passes its DSNs in the environment.
package quiver_test

import (
	"context"
	"database/sql"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	_ "github.com/apache/arrow-go/v18/arrow/flight/flightsql/driver"
	pb "github.com/apache/arrow-go/v18/arrow/flight/gen/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func open(t *testing.T, env string) *sql.DB {
	t.Helper()
	dsn := os.Getenv(env)
	if dsn == "" {
		t.Fatalf("set %s (tests/python/test_go.py does)", env)
	}
	db, err := sql.Open("flightsql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func names(t *testing.T, rows *sql.Rows) []string {
	t.Helper()
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestQueriesAndParameters(t *testing.T) {
	db := open(t, "QUIVER_ADMIN_DSN")
	var n int64
	if err := db.QueryRow("SELECT count(*) FROM tpch.nation").Scan(&n); err != nil || n != 25 {
		t.Fatalf("count: %d, %v", n, err)
	}
	rows, err := db.Query("SELECT n_name FROM tpch.nation WHERE n_regionkey = ? AND n_name < ? ORDER BY n_name", 1, "P")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, rows), []string{"ARGENTINA", "BRAZIL", "CANADA"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	stmt, err := db.Prepare("SELECT count(*) FROM tpch.nation WHERE n_regionkey = ?")
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	for region := int64(0); region < 5; region++ {
		if err := stmt.QueryRow(region).Scan(&n); err != nil || n != 5 {
			t.Fatalf("region %d: %d, %v", region, n, err)
		}
	}
}

func TestValuesArriveAsGoTypes(t *testing.T) {
	db := open(t, "QUIVER_ADMIN_DSN")
	var key, price, date, comment any
	err := db.QueryRow("SELECT o_orderkey, o_totalprice, o_orderdate, o_comment FROM tpch.orders WHERE o_orderkey = 1").
		Scan(&key, &price, &date, &comment)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{reflect.TypeOf(key).String(), reflect.TypeOf(price).String(), reflect.TypeOf(date).String(),
		reflect.TypeOf(comment).String()}
	if want := []string{"int64", "float64", "time.Time", "string"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("types %v, want %v", got, want)
	}
	if key.(int64) != 1 || date.(time.Time).Year() < 1992 || comment.(string) == "" {
		t.Fatalf("values %v %v %v %v", key, price, date, comment)
	}
}

func TestAnalystSeesOnlyGrantedTables(t *testing.T) {
	db := open(t, "QUIVER_ANALYST_DSN")
	rows, err := db.Query("SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema <> 'information_schema'")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(t, rows); !reflect.DeepEqual(got, []string{"tpch.nation"}) {
		t.Fatalf("tables: %v", got)
	}
	var n int64
	err = db.QueryRow("SELECT count(*) FROM tpch.orders").Scan(&n)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("an ungranted table: %v", err)
	}
}

// A pool no larger than the per-user cap (query.max_concurrent_per_user, 8 by default), each
// connection running one query at a time, is never refused: a finished query's place is
// free before the client can send its next one.
func TestAPoolWithinTheConcurrencyCapIsNeverRefused(t *testing.T) {
	db := open(t, "QUIVER_ANALYST_DSN")
	db.SetMaxOpenConns(8)
	const workers, lookups = 8, 200
	errs := make(chan error, workers*lookups)
	done := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for i := 0; i < lookups; i++ {
				var name string
				key := (w*lookups + i) % 25
				if err := db.QueryRow("SELECT n_name FROM tpch.nation WHERE n_nationkey = ?", key).Scan(&name); err != nil {
					errs <- err
				} else if name == "" {
					errs <- errorString("empty name")
				}
			}
		}(w)
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	close(errs)
	var failed []string
	for err := range errs {
		failed = append(failed, err.Error())
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d lookups failed; first: %s", len(failed), workers*lookups, failed[0])
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// Writes: Exec of CREATE TABLE, INSERT (with and without parameters) and DROP answer with
// the rows written; the Flight SQL client's bulk ingest appends; a user who only reads is
// told where it may write.
func TestWritesThroughExecAndIngest(t *testing.T) {
	db := open(t, "QUIVER_ADMIN_DSN")
	exec := func(query string, args ...any) int64 {
		t.Helper()
		res, err := db.Exec(query, args...)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	exec("DROP TABLE IF EXISTS me.go_t")
	exec("CREATE TABLE me.go_t (id BIGINT, name VARCHAR)")
	if n := exec("INSERT INTO me.go_t VALUES (1, 'a'), (2, 'b')"); n != 2 {
		t.Fatalf("insert: %d rows", n)
	}
	if n := exec("INSERT INTO me.go_t VALUES (?, ?)", 3, "c"); n != 1 {
		t.Fatalf("prepared insert: %d rows", n)
	}

	// Bulk ingest through the Flight SQL client, as an appending Go service would.
	dsn := os.Getenv("QUIVER_ADMIN_ADDR")
	client, err := flightsql.NewClient(dsn, nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, err := client.Client.AuthenticateBasicToken(context.Background(), os.Getenv("QUIVER_ADMIN_EMAIL"), os.Getenv("QUIVER_ADMIN_PASSWORD"))
	if err != nil {
		t.Fatal(err)
	}
	schema := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{4, 5}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"d", "e"}, nil)
	rec := b.NewRecord()
	defer rec.Release()
	rdr, err := array.NewRecordReader(schema, []arrow.Record{rec})
	if err != nil {
		t.Fatal(err)
	}
	me := "me"
	n, err := client.ExecuteIngest(ctx, rdr, &flightsql.ExecuteIngestOpts{
		TableDefinitionOptions: &pb.CommandStatementIngest_TableDefinitionOptions{
			IfNotExist: pb.CommandStatementIngest_TableDefinitionOptions_TABLE_NOT_EXIST_OPTION_FAIL,
			IfExists:   pb.CommandStatementIngest_TableDefinitionOptions_TABLE_EXISTS_OPTION_APPEND,
		},
		Table:  "go_t",
		Schema: &me,
	})
	if err != nil || n != 2 {
		t.Fatalf("ingest: %d rows, %v", n, err)
	}
	var count int64
	if err := db.QueryRow("SELECT count(*) FROM me.go_t").Scan(&count); err != nil || count != 5 {
		t.Fatalf("count: %d, %v", count, err)
	}
	exec("DROP TABLE me.go_t")

	analyst := open(t, "QUIVER_ANALYST_DSN")
	_, err = analyst.Exec("CREATE TABLE tpch.mine AS SELECT 1 AS one")
	if err == nil || !strings.Contains(err.Error(), "read-only") || !strings.Contains(err.Error(), "`me`") {
		t.Fatalf("a write to a schema the analyst only reads: %v", err)
	}
}
