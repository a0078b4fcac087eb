// Java's echo server as the java.net tutorial shows it: new ServerSocket(port)
// and an accept loop, a thread per client.
// Usage: java Echo PORT [any|loopback]. It prints the line protocol of
// runtimes/README.md; ServerSocket reads SO_REUSEADDR and SO_REUSEPORT
// with getsockopt, and offers no way to read IPV6_V6ONLY or
// SO_EXCLUSIVEADDRUSE (`?`).
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.BindException;
import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.StandardSocketOptions;

public class Echo {
    static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static void echo(Socket client) {
        try (client; InputStream in = client.getInputStream(); OutputStream out = client.getOutputStream()) {
            in.transferTo(out);
        } catch (IOException e) {
            // the client went away
        }
    }

    public static void main(String[] args) throws IOException {
        int port = Integer.parseInt(args[0]);
        boolean loopback = args.length > 1 && args[1].equals("loopback");
        ServerSocket server;
        try {
            server = loopback
                    ? new ServerSocket(port, 50, InetAddress.getByName("127.0.0.1"))
                    : new ServerSocket(port); // all interfaces
        } catch (BindException e) {
            say("failed BindException " + e.getMessage());
            System.exit(1);
            return;
        }
        boolean windows = System.getProperty("os.name").startsWith("Windows");
        String reusePort;
        try {
            reusePort = server.getOption(StandardSocketOptions.SO_REUSEPORT) ? "1" : "0";
        } catch (UnsupportedOperationException e) {
            reusePort = "-";
        }
        InetAddress address = server.getInetAddress();
        String host = address instanceof Inet6Address
                ? "[" + address.getHostAddress() + "]"
                : address.getHostAddress();
        say("ready " + System.getProperty("java.version") + " " + host + ":" + server.getLocalPort()
                + ",reuseaddr=" + (server.getReuseAddress() ? "1" : "0")
                + ",reuseport=" + reusePort
                + ",v6only=?"
                + ",exclusive=" + (windows ? "?" : "-"));
        Thread stdin = new Thread(() -> {
            // The end of stdin is the harness's word to stop.
            try {
                System.in.transferTo(OutputStream.nullOutputStream());
            } catch (IOException e) {
                // stop all the same
            }
            System.exit(0);
        });
        stdin.setDaemon(true);
        stdin.start();
        while (true) {
            Socket client = server.accept();
            say("accepted");
            new Thread(() -> echo(client)).start();
        }
    }
}
