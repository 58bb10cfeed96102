// A JDBC client (the PostgreSQL driver, pgjdbc) run by tests/test_proxy_jdbc.py against pgwitness.
// Usage: java -cp postgresql.jar:. PgwitnessJdbc SCENARIO URL USER PASSWORD
// Prints "key=value" lines for the test to check; any unexpected exception exits non-zero.

import java.io.StringReader;
import java.io.StringWriter;
import java.security.MessageDigest;
import java.sql.CallableStatement;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.HexFormat;
import java.util.Properties;
import java.util.Random;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public class PgwitnessJdbc {
    static String url, user, password;

    static Connection connect(Properties extra) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.putAll(extra);
        return DriverManager.getConnection(url, p);
    }

    static void out(String key, Object value) {
        System.out.println(key + "=" + value);
    }

    static String one(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getString(1);
        }
    }

    static String sqlstate(Connection c, String sql) {
        try (Statement s = c.createStatement()) {
            s.execute(sql);
            return "none";
        } catch (SQLException e) {
            return e.getSQLState();
        }
    }

    public static void main(String[] args) throws Exception {
        String scenario = args[0];
        url = args[1];
        user = args[2];
        password = args[3];
        switch (scenario) {
            case "queries" -> queries();
            case "copy" -> copy();
            case "cancel" -> cancel();
            case "notify" -> notifyListen();
            case "policy" -> policy();
            case "refcursor" -> refcursor();
            default -> throw new IllegalArgumentException(scenario);
        }
        out("done", scenario);
    }

    // Simple and extended query, server-side prepared statements, batches (pipelined
    // Bind/Execute), transactions, types, and a 5 MB bytea both ways.
    static void queries() throws Exception {
        Properties props = new Properties();
        props.setProperty("prepareThreshold", "3"); // named server-side statements from the 3rd use
        try (Connection c = connect(props)) {
            out("backend_pid", one(c, "select pg_backend_pid()"));
            out("current_user", one(c, "select current_user"));
            try (Statement s = c.createStatement()) {
                s.execute("create temp table jt (id int primary key, note text, amount numeric, at timestamptz)");
                boolean more = s.execute("select 1; select 2");
                int results = 0;
                while (more || s.getUpdateCount() != -1) {
                    if (more) results++;
                    more = s.getMoreResults();
                }
                out("multi_results", results);
            }
            long sum = 0;
            try (PreparedStatement ps = c.prepareStatement("select ?::int * 2")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        sum += rs.getInt(1);
                    }
                }
            }
            out("prepared_sum", sum);
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement(
                    "insert into jt values (?, ?, ?, now())")) {
                for (int i = 0; i < 1000; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row " + i);
                    ps.setBigDecimal(3, new java.math.BigDecimal(i + ".25"));
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                out("batch_statements", counts.length);
            }
            c.commit();
            out("rows", one(c, "select count(*) from jt"));
            out("amount_sum", one(c, "select sum(amount) from jt"));
            try (Statement s = c.createStatement()) {
                s.execute("delete from jt where id < 500");
            }
            c.rollback();
            out("rows_after_rollback", one(c, "select count(*) from jt"));
            out("in_failed_tx", sqlstate(c, "select 1/0") + "," + sqlstate(c, "select 1"));
            c.rollback();
            c.setAutoCommit(true);
            out("array", one(c, "select array[1,2,3]::int[]"));
            out("json", one(c, "select '{\"a\": [1, 2]}'::jsonb -> 'a'"));
            byte[] blob = new byte[5 << 20];
            new Random(42).nextBytes(blob);
            try (PreparedStatement ps = c.prepareStatement("select ?::bytea, md5(?::bytea)")) {
                ps.setBytes(1, blob);
                ps.setBytes(2, blob);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    byte[] back = rs.getBytes(1);
                    String md5 = HexFormat.of().formatHex(MessageDigest.getInstance("MD5").digest(blob));
                    out("bytea_roundtrip", java.util.Arrays.equals(blob, back));
                    out("bytea_md5_matches", md5.equals(rs.getString(2)));
                }
            }
        }
    }

    // COPY FROM STDIN and COPY TO STDOUT through the driver's CopyManager.
    static void copy() throws Exception {
        try (Connection c = connect(new Properties())) {
            try (Statement s = c.createStatement()) {
                s.execute("create temp table jc (id int, v text)");
            }
            StringBuilder csv = new StringBuilder();
            for (int i = 0; i < 20000; i++) csv.append(i).append(",value ").append(i).append('\n');
            CopyManager cm = ((PGConnection) c).getCopyAPI();
            out("copied_in", cm.copyIn("copy jc from stdin (format csv)", new StringReader(csv.toString())));
            StringWriter w = new StringWriter();
            out("copied_out", cm.copyOut("copy (select * from jc order by id) to stdout (format csv)", w));
            out("copy_out_equal", w.toString().equals(csv.toString()));
            String bad = "1,ok\nnot-a-number,x\n";
            try {
                cm.copyIn("copy jc from stdin (format csv)", new StringReader(bad));
                out("bad_copy", "none");
            } catch (SQLException e) {
                out("bad_copy", e.getSQLState());
            }
            out("after_bad_copy", one(c, "select count(*) from jc"));
        }
    }

    // Statement.cancel() sends a CancelRequest on a new connection to the proxy.
    static void cancel() throws Exception {
        try (Connection c = connect(new Properties()); Statement s = c.createStatement()) {
            Thread t = new Thread(() -> {
                try {
                    Thread.sleep(700);
                    s.cancel();
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            long start = System.nanoTime();
            t.start();
            try {
                s.execute("select pg_sleep(30)");
                out("cancel", "none");
            } catch (SQLException e) {
                out("cancel", e.getSQLState());
            }
            t.join();
            out("cancel_seconds_lt_10", (System.nanoTime() - start) / 1e9 < 10);
            out("after_cancel", one(c, "select 'still usable'"));
        }
    }

    // LISTEN on one connection, NOTIFY from another, delivered asynchronously.
    static void notifyListen() throws Exception {
        try (Connection a = connect(new Properties()); Connection b = connect(new Properties())) {
            try (Statement s = a.createStatement()) {
                s.execute("listen pgw_jdbc");
            }
            try (Statement s = b.createStatement()) {
                s.execute("notify pgw_jdbc, 'hello from b'");
            }
            PGNotification[] got = null;
            for (int i = 0; i < 50 && (got == null || got.length == 0); i++) {
                got = ((PGConnection) a).getNotifications(100);
            }
            out("notifications", got == null ? 0 : got.length);
            out("payload", got != null && got.length > 0 ? got[0].getParameter() : "");
        }
    }

    static String rows(ResultSet rs) throws SQLException {
        StringBuilder seen = new StringBuilder();
        while (rs.next()) {
            seen.append(rs.getString(1)).append(';');
        }
        return seen.toString();
    }

    // Cursors where the database holds code that opens cursors of its own (test_proxy_jdbc's
    // refcursor set-up): a function's refcursor read the driver's ways (CallableStatement,
    // getObject of a function's result, a FETCH of the name it returned), a fetch-size
    // portal continued in later round trips, and a trigger's cursor.
    static void refcursor() throws Exception {
        try (Connection c = connect(new Properties())) {
            c.setAutoCommit(false);
            try (CallableStatement cs = c.prepareCall("{ ? = call s32j.report() }")) {
                cs.registerOutParameter(1, Types.OTHER);
                cs.execute();
                try (ResultSet rs = (ResultSet) cs.getObject(1)) {
                    out("callable_rows", rows(rs));
                }
            }
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("select s32j.report()")) {
                rs.next();
                try (ResultSet inner = (ResultSet) rs.getObject(1)) {
                    out("getobject_rows", rows(inner));
                }
            }
            String name = one(c, "select s32j.report()");
            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("FETCH ALL IN \"" + name + "\"")) {
                out("fetched_rows", rows(rs));
            }
            try (Statement s = c.createStatement()) {
                s.setFetchSize(1);
                try (ResultSet rs = s.executeQuery("select v from s32j.pub order by v")) {
                    out("fetch_size_rows", rows(rs));
                }
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.execute("insert into s32j.t values (1)");
            }
            out("code_cursor", sqlstate(c, "FETCH ALL FROM s32j_audit"));
            c.rollback();
            out("after_rollback", one(c, "select 'usable'"));
        }
    }

    // A task grant's policy: allowed reads work, denials are SQLException 42501 with the
    // session still usable, in autocommit and inside a transaction, simple and prepared.
    static void policy() throws Exception {
        try (Connection c = connect(new Properties())) {
            out("allowed", one(c, "select count(*) from public.orders") != null);
            out("denied_simple", sqlstate(c, "select * from secret.payroll"));
            try (PreparedStatement ps = c.prepareStatement("select salary from secret.payroll where id = ?")) {
                ps.setInt(1, 1);
                ps.executeQuery();
                out("denied_prepared", "none");
            } catch (SQLException e) {
                out("denied_prepared", e.getSQLState());
                out("denied_message_names_relation", e.getMessage().contains("secret.payroll"));
            }
            out("after_denial", one(c, "select 'usable'"));
            c.setAutoCommit(false);
            one(c, "select count(*) from public.orders");
            out("denied_in_tx", sqlstate(c, "drop table public.orders"));
            out("after_denied_in_tx", sqlstate(c, "select 1"));
            c.rollback();
            out("after_rollback", one(c, "select count(*) > 0 from public.orders"));
        }
    }
}
