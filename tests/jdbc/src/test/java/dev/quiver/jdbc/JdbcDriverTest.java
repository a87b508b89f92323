package dev.quiver.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigDecimal;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The Arrow Flight SQL JDBC driver against a running Quiver, called the way DBeaver,
 * Tableau and IntelliJ call it. The server and its users come from system properties set
 * by tests/python/test_jdbc.py.
 */
class JdbcDriverTest {
  private static String property(String name) {
    String value = System.getProperty(name);
    if (value == null || value.isEmpty()) {
      throw new IllegalStateException("set -D" + name + " (tests/python/test_jdbc.py does)");
    }
    return value;
  }

  private static final String HOST = property("quiver.host");
  private static final String PORT = property("quiver.port");
  private static final String ADMIN = property("quiver.admin.email");
  private static final String ADMIN_PASSWORD = property("quiver.admin.password");
  private static final String ANALYST = property("quiver.analyst.email");
  private static final String ANALYST_PASSWORD = property("quiver.analyst.password");
  private static final String ANALYST_PAT = property("quiver.analyst.pat");
  // A second server with TLS, its certificate from a throwaway CA: as a PEM file and in a
  // PKCS#12 trust store (what `keytool -importcert` makes for a JVM).
  private static final String TLS_PORT = property("quiver.tls.port");
  private static final String TLS_CA = property("quiver.tls.ca");
  private static final String TLS_TRUST_STORE = property("quiver.tls.truststore");
  private static final String TLS_TRUST_STORE_PASSWORD = property("quiver.tls.truststore.password");

  private static String url(String extra) {
    return "jdbc:arrow-flight-sql://" + HOST + ":" + PORT + "/?useEncryption=false" + extra;
  }

  private static Connection connect(String user, String password, String extra) throws SQLException {
    Properties props = new Properties();
    props.setProperty("user", user);
    props.setProperty("password", password);
    return DriverManager.getConnection(url(extra), props);
  }

  private static Connection admin() throws SQLException {
    return connect(ADMIN, ADMIN_PASSWORD, "");
  }

  /** The values of column `name`, read to the end; the result set is closed. */
  private static List<String> column(ResultSet results, String name) throws SQLException {
    List<String> values = new ArrayList<>();
    try (ResultSet rs = results) {
      while (rs.next()) {
        values.add(rs.getString(name));
      }
    }
    return values;
  }

  private static long scalar(Connection conn, String sql) throws SQLException {
    try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
      assertTrue(rs.next(), sql);
      return rs.getLong(1);
    }
  }

  @Test
  void selectOneProbeWorksWithPasswordPatAsPasswordAndToken() throws SQLException {
    try (Connection conn = admin()) {
      assertEquals(1, scalar(conn, "SELECT 1"));
      assertTrue(conn.isValid(5));
    }
    try (Connection conn = connect(ANALYST, ANALYST_PAT, "")) {
      assertEquals(25, scalar(conn, "SELECT count(*) FROM tpch.nation"));
    }
    try (Connection conn = DriverManager.getConnection(url("&token=" + ANALYST_PAT))) {
      assertEquals(25, scalar(conn, "SELECT count(*) FROM tpch.nation"));
    }
    SQLException refused =
        assertThrows(SQLException.class, () -> connect(ADMIN, "wrong password", "").createStatement()
            .executeQuery("SELECT 1"));
    assertFalse(refused.getMessage().contains("wrong password"), refused.getMessage());
  }

  private static Connection tls(String extra) throws SQLException {
    Properties props = new Properties();
    props.setProperty("user", ADMIN);
    props.setProperty("password", ADMIN_PASSWORD);
    String url = "jdbc:arrow-flight-sql://" + HOST + ":" + TLS_PORT + "/?useEncryption=true" + extra;
    return DriverManager.getConnection(url, props);
  }

  @Test
  void tlsWithTheCaAsPemOrInATrustStore() throws SQLException {
    try (Connection conn = tls("&tlsRootCerts=" + TLS_CA)) {
      assertEquals(5, scalar(conn, "SELECT count(*) FROM tpch.region"));
    }
    try (Connection conn = tls("&useSystemTrustStore=false&trustStore=" + TLS_TRUST_STORE
        + "&trustStorePassword=" + TLS_TRUST_STORE_PASSWORD)) {
      assertEquals(5, scalar(conn, "SELECT count(*) FROM tpch.region"));
    }
    // The JVM's own trust store does not know the CA: the certificate is really checked.
    assertThrows(SQLException.class, () -> {
      try (Connection conn = tls("")) {
        scalar(conn, "SELECT 1");
      }
    });
  }

  @Test
  void valuesArriveAsTheirJavaTypes() throws SQLException {
    String sql = "SELECT CAST(42 AS BIGINT) AS big, TRUE AS flag, CAST(12.34 AS DECIMAL(10, 2)) AS amount, "
        + "'text' AS word, DATE '2024-02-29' AS day, TIMESTAMP '2024-02-29 13:14:15' AS local_ts, "
        + "arrow_cast(TIMESTAMP '2024-02-29 13:14:15', 'Timestamp(Microsecond, Some(\"UTC\"))') AS utc_ts, "
        + "CAST(1.5 AS DOUBLE) AS ratio";
    try (Connection conn = admin(); Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
      ResultSetMetaData md = rs.getMetaData();
      Map<String, Integer> types = new HashMap<>();
      for (int i = 1; i <= md.getColumnCount(); i++) {
        types.put(md.getColumnLabel(i), md.getColumnType(i));
      }
      assertEquals(Types.BIGINT, types.get("big"));
      assertEquals(Types.BOOLEAN, types.get("flag"));
      assertEquals(Types.DECIMAL, types.get("amount"));
      assertEquals(Types.VARCHAR, types.get("word"));
      assertEquals(Types.DATE, types.get("day"));
      assertEquals(Types.TIMESTAMP, types.get("local_ts"));
      assertTrue(Set.of(Types.TIMESTAMP, Types.TIMESTAMP_WITH_TIMEZONE).contains(types.get("utc_ts")));
      assertEquals(Types.DOUBLE, types.get("ratio"));

      assertTrue(rs.next());
      assertEquals(42L, rs.getObject("big"));
      assertEquals(Boolean.TRUE, rs.getObject("flag"));
      assertEquals(new BigDecimal("12.34"), rs.getBigDecimal("amount"));
      assertEquals("text", rs.getString("word"));
      assertEquals(java.sql.Date.valueOf("2024-02-29"), rs.getDate("day"));
      assertEquals(java.sql.Timestamp.valueOf("2024-02-29 13:14:15"), rs.getTimestamp("local_ts"));
      assertEquals(java.time.Instant.parse("2024-02-29T13:14:15Z"), rs.getTimestamp("utc_ts").toInstant());
      assertEquals(1.5, rs.getDouble("ratio"));
      assertFalse(rs.next());
    }
  }

  @Test
  void resultSetMetadataHasPrecisionAndScale() throws SQLException {
    String sql = "SELECT o_totalprice, CAST(1.5 AS DECIMAL(7, 3)) AS ratio, o_comment FROM tpch.orders LIMIT 1";
    try (Connection conn = admin(); Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
      ResultSetMetaData md = rs.getMetaData();
      assertEquals(15, md.getPrecision(1));
      assertEquals(2, md.getScale(1));
      assertEquals(7, md.getPrecision(2));
      assertEquals(3, md.getScale(2));
      assertEquals(Types.VARCHAR, md.getColumnType(3));
    }
    try (Connection conn = admin(); PreparedStatement ps = conn.prepareStatement(
        "SELECT o_totalprice FROM tpch.orders WHERE o_orderkey = ?")) {
      ResultSetMetaData md = ps.getMetaData();
      assertEquals(15, md.getPrecision(1));
      assertEquals(2, md.getScale(1));
    }
  }

  @Test
  void timestampAndTimeParametersKeepTheirValue() throws SQLException {
    try (Connection conn = admin();
        PreparedStatement ps = conn.prepareStatement(
            "SELECT count(*) FROM (VALUES (TIMESTAMP '2024-02-29 13:14:15', TIME '13:14:15')) AS t(ts, tm) "
                + "WHERE ts = ? AND tm = ?")) {
      ps.setTimestamp(1, java.sql.Timestamp.valueOf("2024-02-29 13:14:15"));
      ps.setTime(2, java.sql.Time.valueOf("13:14:15"));
      try (ResultSet rs = ps.executeQuery()) {
        assertTrue(rs.next());
        assertEquals(1L, rs.getLong(1));
      }
      ps.setTimestamp(1, java.sql.Timestamp.valueOf("2024-02-29 13:14:16"));
      try (ResultSet rs = ps.executeQuery()) {
        assertTrue(rs.next());
        assertEquals(0L, rs.getLong(1));
      }
    }
  }

  @Test
  void everyDatabaseMetadataGetterAnswers() throws Exception {
    // What DBeaver, Tableau and IntelliJ call while they browse: every getter without
    // arguments, and the common ones with, must answer (driver 18.3 threw
    // NullPointerException for SqlInfo ids the server left out).
    try (Connection conn = admin()) {
      DatabaseMetaData md = conn.getMetaData();
      List<String> failures = new ArrayList<>();
      int called = 0;
      for (java.lang.reflect.Method m : DatabaseMetaData.class.getMethods()) {
        if (m.getParameterCount() != 0 || m.getDeclaringClass() != DatabaseMetaData.class) {
          continue;
        }
        called++;
        try {
          Object value = m.invoke(md);
          if (value instanceof ResultSet rs) {
            while (rs.next()) { }
            rs.close();
          }
        } catch (java.lang.reflect.InvocationTargetException e) {
          Throwable cause = e.getCause();
          if (!(cause instanceof java.sql.SQLFeatureNotSupportedException)) {
            failures.add(m.getName() + ": " + cause);
          }
        }
      }
      assertTrue(called >= 130, "called " + called);
      assertEquals(List.of(), failures);
      assertEquals(0, md.getMaxColumnsInSelect());
      assertEquals(0, md.getMaxRowSize());
      assertEquals(0, md.getMaxTablesInSelect());
      assertTrue(md.supportsANSI92EntryLevelSQL());
      assertFalse(md.supportsANSI92FullSQL());
      // The server's conversion map as the driver reads it (its entries named as the spec says).
      assertTrue(md.supportsConvert());
      assertTrue(md.supportsConvert(Types.INTEGER, Types.VARCHAR));
      assertTrue(md.supportsConvert(Types.VARCHAR, Types.DATE));
      assertTrue(md.supportsConvert(Types.DATE, Types.TIMESTAMP));
      assertTrue(md.supportsConvert(Types.BIGINT, Types.DECIMAL));
      assertFalse(md.supportsConvert(Types.DATE, Types.INTEGER));
      assertFalse(md.supportsConvert(Types.BINARY, Types.BIGINT));
      assertTrue(md.supportsResultSetType(ResultSet.TYPE_FORWARD_ONLY));
      assertTrue(md.supportsResultSetConcurrency(ResultSet.TYPE_FORWARD_ONLY, ResultSet.CONCUR_READ_ONLY));
      assertFalse(md.supportsResultSetConcurrency(ResultSet.TYPE_FORWARD_ONLY, ResultSet.CONCUR_UPDATABLE));
    }
  }

  @Test
  void preparedStatementsBindParameters() throws SQLException {
    try (Connection conn = admin();
        PreparedStatement ps = conn.prepareStatement(
            "SELECT n_name FROM tpch.nation WHERE n_regionkey = ? AND n_name LIKE ? ORDER BY n_name")) {
      ps.setLong(1, 1);
      ps.setString(2, "%A%");
      try (ResultSet rs = ps.executeQuery()) {
        assertEquals(List.of("ARGENTINA", "BRAZIL", "CANADA", "UNITED STATES"), column(rs, "n_name"));
      }
      ps.setLong(1, 3);
      ps.setString(2, "%");
      try (ResultSet rs = ps.executeQuery()) {
        assertEquals(5, column(rs, "n_name").size());
      }
    }
  }

  @Test
  void writesThroughExecuteUpdateCreateTableAsAndBatches() throws SQLException {
    try (Connection conn = connect(ANALYST, ANALYST_PASSWORD, "");
        Statement st = conn.createStatement()) {
      st.executeUpdate("DROP TABLE IF EXISTS me.jdbc_t");
      assertEquals(0, st.executeUpdate("CREATE TABLE me.jdbc_t (id BIGINT, name VARCHAR)"));
      assertEquals(2, st.executeUpdate("INSERT INTO me.jdbc_t VALUES (1, 'a'), (2, 'b')"));
      try (PreparedStatement ps = conn.prepareStatement("INSERT INTO me.jdbc_t VALUES (?, ?)")) {
        for (long id = 3; id <= 5; id++) {
          ps.setLong(1, id);
          ps.setString(2, "n" + id);
          ps.addBatch();
        }
        int[] counts = ps.executeBatch();
        assertEquals(5, scalar(conn, "SELECT count(*) FROM me.jdbc_t"));
        assertTrue(counts.length >= 1, java.util.Arrays.toString(counts));
        ps.setLong(1, 6);
        ps.setString(2, "six");
        assertEquals(1, ps.executeUpdate());
      }
      // CTAS of what the analyst can read; `execute` of a write has no result set.
      st.executeUpdate("DROP TABLE IF EXISTS me.jdbc_nations");
      assertFalse(st.execute("CREATE TABLE me.jdbc_nations AS SELECT * FROM tpch.nation"));
      assertEquals(scalar(conn, "SELECT count(*) FROM tpch.nation"),
          scalar(conn, "SELECT count(*) FROM me.jdbc_nations"));
      assertEquals(List.of("jdbc_nations", "jdbc_t"),
          column(conn.getMetaData().getTables(null, "me", "jdbc%", null), "TABLE_NAME"));
      // A schema the analyst only reads is refused, naming where to write.
      SQLException refused = assertThrows(SQLException.class,
          () -> st.executeUpdate("CREATE TABLE tpch.mine AS SELECT 1 AS one"));
      assertTrue(refused.getMessage().contains("`me`"), refused.getMessage());
      assertEquals(6, scalar(conn, "SELECT count(*) FROM me.jdbc_t"));

      // No transactions: with auto-commit off, each statement still commits on its own (another
      // connection sees it at once); commit() and rollback() are the driver's no-ops.
      conn.setAutoCommit(false);
      assertEquals(1, st.executeUpdate("INSERT INTO me.jdbc_t VALUES (7, 'seven')"));
      try (Connection other = connect(ANALYST, ANALYST_PASSWORD, "")) {
        assertEquals(7, scalar(other, "SELECT count(*) FROM me.jdbc_t"));
      }
      conn.rollback();
      conn.commit();
      assertEquals(7, scalar(conn, "SELECT count(*) FROM me.jdbc_t"));
      assertEquals(Connection.TRANSACTION_NONE, conn.getMetaData().getDefaultTransactionIsolation());
      assertFalse(conn.getMetaData().supportsTransactions());
    } finally {
      // The analyst's other tests list what it can read: leave only what it was granted.
      try (Connection conn = connect(ANALYST, ANALYST_PASSWORD, "");
          Statement st = conn.createStatement()) {
        st.executeUpdate("DROP TABLE IF EXISTS me.jdbc_t");
        st.executeUpdate("DROP TABLE IF EXISTS me.jdbc_nations");
      }
    }
  }

  @Test
  void aLargeResultIsFetchedWhole() throws SQLException {
    try (Connection conn = admin()) {
      long expected = scalar(conn, "SELECT count(*) FROM tpch.lineitem");
      long rows = 0;
      long sum = 0;
      try (Statement st = conn.createStatement();
          ResultSet rs = st.executeQuery("SELECT l_orderkey, l_comment FROM tpch.lineitem")) {
        while (rs.next()) {
          rows++;
          sum += rs.getLong(1);
        }
      }
      assertEquals(expected, rows);
      assertEquals(scalar(conn, "SELECT sum(l_orderkey) FROM tpch.lineitem"), sum);
    }
  }

  @Test
  void databaseMetadataNamesWhatBrowsersShow() throws SQLException {
    try (Connection conn = admin()) {
      DatabaseMetaData md = conn.getMetaData();
      assertEquals(List.of("quiver"), column(md.getCatalogs(), "TABLE_CAT"));
      assertTrue(column(md.getSchemas(), "TABLE_SCHEM").contains("tpch"));
      Set<String> tables = new TreeSet<>(column(md.getTables(null, "tpch", "%", new String[] {"TABLE"}), "TABLE_NAME"));
      assertTrue(tables.containsAll(Set.of("nation", "orders", "lineitem")), tables.toString());
      assertEquals(List.of(), column(md.getTables(null, "tpch", "%", new String[] {"VIEW"}), "TABLE_NAME"));

      Map<String, Integer> types = new HashMap<>();
      Map<String, String> typeNames = new HashMap<>();
      Map<String, Integer> digits = new HashMap<>();
      try (ResultSet rs = md.getColumns(null, "tpch", "orders", "%")) {
        while (rs.next()) {
          types.put(rs.getString("COLUMN_NAME"), rs.getInt("DATA_TYPE"));
          typeNames.put(rs.getString("COLUMN_NAME"), rs.getString("TYPE_NAME"));
          digits.put(rs.getString("COLUMN_NAME"), rs.getInt("DECIMAL_DIGITS"));
        }
      }
      assertEquals(Types.BIGINT, types.get("o_orderkey"));
      assertEquals(Types.DECIMAL, types.get("o_totalprice"));
      assertEquals(2, digits.get("o_totalprice"));
      assertEquals(Types.DATE, types.get("o_orderdate"));
      assertEquals(Types.VARCHAR, types.get("o_comment"));
      assertEquals("BIGINT", typeNames.get("o_orderkey"));

      // A column's description (`columns:` of its table definition) is its REMARKS.
      Map<String, String> remarks = new HashMap<>();
      try (ResultSet rs = md.getColumns(null, "docs", "regions", "%")) {
        while (rs.next()) {
          remarks.put(rs.getString("COLUMN_NAME"), rs.getString("REMARKS"));
        }
      }
      assertEquals("The region's name", remarks.get("r_name"));
      assertTrue(remarks.containsKey("r_regionkey"));
      assertEquals(null, remarks.get("r_regionkey"));

      // (Driver 18.3 answers getTypeInfo itself, empty, without asking the server.)
      column(md.getTypeInfo(), "TYPE_NAME");
      assertEquals(List.of(), column(md.getPrimaryKeys(null, "tpch", "orders"), "COLUMN_NAME"));
      assertFalse(md.getSQLKeywords().isEmpty());
      // Writable where a grant allows, and in each user's own schema (`me`).
      assertFalse(md.isReadOnly());
    }
  }

  @Test
  void aUserSeesOnlyTheTablesGrantedToThem() throws SQLException {
    try (Connection conn = connect(ANALYST, ANALYST_PASSWORD, "")) {
      DatabaseMetaData md = conn.getMetaData();
      assertEquals(List.of("nation"), column(md.getTables(null, null, "%", null), "TABLE_NAME"));
      SQLException ungranted = assertThrows(SQLException.class,
          () -> scalar(conn, "SELECT count(*) FROM tpch.orders"));
      SQLException missing = assertThrows(SQLException.class,
          () -> scalar(conn, "SELECT count(*) FROM tpch.no_such_table"));
      assertEquals(missing.getMessage().replace("no_such_table", "X"), ungranted.getMessage().replace("orders", "X"));
    }
  }

  @Test
  void theReadmeUrlConnectsAndClosesCleanly() throws Exception {
    // The URL as the README gives it (for DBeaver and every pool): closing must not throw.
    String readme = Files.readString(Path.of("..", "..", "README.md"));
    Matcher documented = Pattern.compile("jdbc:arrow-flight-sql://127\\.0\\.0\\.1:50051/\\?\\S*").matcher(readme);
    assertTrue(documented.find(), "the README gives a JDBC URL");
    String url = documented.group().replace("127.0.0.1:50051", HOST + ":" + PORT);
    Properties props = new Properties();
    props.setProperty("user", ADMIN);
    props.setProperty("password", ADMIN_PASSWORD);
    for (int i = 0; i < 3; i++) {
      Connection conn = DriverManager.getConnection(url, props);
      assertEquals(25, scalar(conn, "SELECT count(*) FROM tpch.nation"));
      conn.close();
    }
  }

  @Test
  void theCatalogPropertyIsASessionOption() throws SQLException {
    // The driver sends `catalog` as a session option when it connects; Quiver's is `quiver`.
    Connection conn = connect(ADMIN, ADMIN_PASSWORD, "&catalog=quiver");
    assertEquals(25, scalar(conn, "SELECT count(*) FROM tpch.nation"));
    // Driver 18.3 shuts its channel before sending CloseSession when a catalog is set, and
    // reports that from close() (apache/arrow-java#66, fixed in arrow-java 19): only that.
    try {
      conn.close();
    } catch (SQLException e) {
      assertTrue(e.getMessage().contains("Channel shutdown invoked"), e.getMessage());
    }
    SQLException refused = assertThrows(SQLException.class, () ->
        scalar(connect(ADMIN, ADMIN_PASSWORD, "&catalog=elsewhere"), "SELECT 1"));
    assertTrue(refused.getMessage().contains("catalog"), refused.getMessage());
  }
}
