// .NET's echo server as the TcpListener documentation shows it:
// TcpListener.Create(port) (all interfaces, one dual-stack IPv6 socket where
// the OS has IPv6) or new TcpListener(IPAddress.Loopback, port), then Start().
// Usage: Echo PORT [any|loopback]. It prints the line protocol of
// runtimes/README.md, the options read with getsockopt.
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

int port = int.Parse(args[0]);
bool loopback = args.Length > 1 && args[1] == "loopback";
var listener = loopback ? new TcpListener(IPAddress.Loopback, port) : TcpListener.Create(port);
try
{
    listener.Start();
}
catch (SocketException e)
{
    Console.WriteLine($"failed {e.SocketErrorCode} {e.Message}");
    return 1;
}

Socket socket = listener.Server;
string Flag(Func<object?> read)
{
    try { return Convert.ToInt32(read()) != 0 ? "1" : "0"; }
    catch (SocketException) { return "?"; }
}
bool windows = OperatingSystem.IsWindows();
var local = (IPEndPoint)socket.LocalEndPoint!;
string host = local.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{local.Address}]" : local.Address.ToString();
string reuseAddr = Flag(() => socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress));
// SO_REUSEPORT has no SocketOptionName: read it raw (asm-generic/socket.h; BSD sys/socket.h).
string reusePort = windows ? "-" : Flag(() =>
{
    var value = new byte[4];
    int level = OperatingSystem.IsLinux() ? 1 : 0xffff;
    int name = OperatingSystem.IsLinux() ? 15 : 0x200;
    socket.GetRawSocketOption(level, name, value);
    return BitConverter.ToInt32(value);
});
string v6only = local.AddressFamily == AddressFamily.InterNetworkV6
    ? Flag(() => socket.GetSocketOption(SocketOptionLevel.IPv6, SocketOptionName.IPv6Only))
    : "-";
string exclusive = windows ? Flag(() => socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ExclusiveAddressUse)) : "-";
string version = RuntimeInformation.FrameworkDescription.Replace(".NET ", "").Replace(' ', '-');
Console.WriteLine($"ready {version} {host}:{local.Port},reuseaddr={reuseAddr},reuseport={reusePort},v6only={v6only},exclusive={exclusive}");

// The end of stdin is the harness's word to stop.
_ = Task.Run(() =>
{
    Console.In.ReadToEnd();
    Environment.Exit(0);
});
while (true)
{
    TcpClient client = await listener.AcceptTcpClientAsync();
    Console.WriteLine("accepted");
    _ = Task.Run(async () =>
    {
        using (client)
        {
            NetworkStream stream = client.GetStream();
            try { await stream.CopyToAsync(stream); } catch (IOException) { }
        }
    });
}
