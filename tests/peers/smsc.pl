#!/usr/bin/perl
# A small SMSC for tests, built on Net::SMPP (Debian libnet-smpp-perl), which we did
# not write: it decodes our PDUs with its own SMPP 3.4 code. One session at a time.
#
#   smsc.pl --port 0 --log FILE [--system-id ID --password PW] [--throttle N]
#           [--receipts]
#
# Prints "LISTENING <port>" once ready. Appends one JSON object per event to FILE:
# bind, submit_sm (fields + short_message in hex), enquire_link, unbind, close.
# --throttle N answers the first N submit_sm with ESME_RTHROTTLED (0x58).
# --receipts sends a delivery receipt (deliver_sm, esm_class 4) to a transceiver.
use strict;
use warnings;
use Getopt::Long;
use JSON::PP;
use IO::Handle;
use Net::SMPP;

my ($port, $logfile, $sysid, $pw, $throttle, $receipts) = (0, '/dev/stdout', '', '', 0, 0);
GetOptions('port=i' => \$port, 'log=s' => \$logfile, 'system-id=s' => \$sysid,
           'password=s' => \$pw, 'throttle=i' => \$throttle, 'receipts' => \$receipts)
    or die "bad options\n";

my $json = JSON::PP->new->canonical;
open(my $log, '>>', $logfile) or die "$logfile: $!\n";
$log->autoflush(1);
sub event { my %e = @_; print $log $json->encode(\%e), "\n"; }

my $listener = Net::SMPP->new_listen('127.0.0.1', port => $port, smpp_version => 0x34)
    or die "cannot listen: $!\n";
$| = 1;
print "LISTENING ", $listener->sockport, "\n";

my $next_id = 1000;
my $submits = 0;
while (1) {
    my $conn = $listener->accept or next;
    my $mode = '';
    while (1) {
        my $pdu = $conn->read_pdu;
        if (!defined $pdu) { event(event => 'close'); last; }
        my $cmd = $pdu->{cmd};
        if ($cmd == 0x00000002 || $cmd == 0x00000009) {    # bind_transmitter / transceiver
            $mode = $cmd == 0x00000009 ? 'transceiver' : 'transmitter';
            my $ok = (!$sysid || $pdu->{system_id} eq $sysid) && (!$pw || $pdu->{password} eq $pw);
            event(event => 'bind', mode => $mode, system_id => $pdu->{system_id},
                  system_type => $pdu->{system_type}, ok => $ok ? JSON::PP::true : JSON::PP::false,
                  interface_version => $pdu->{interface_version});
            my $resp = $cmd == 0x00000009 ? 'bind_transceiver_resp' : 'bind_transmitter_resp';
            $conn->$resp(system_id => 'TESTSMSC', seq => $pdu->{seq}, status => $ok ? 0 : 0x0E);
            last unless $ok;
        } elsif ($cmd == 0x00000004) {                    # submit_sm
            $submits++;
            if ($submits <= $throttle) {
                event(event => 'throttled', destination_addr => $pdu->{destination_addr});
                $conn->submit_sm_resp(message_id => '', seq => $pdu->{seq}, status => 0x58);
                next;
            }
            my $id = 'M' . $next_id++;
            event(event => 'submit_sm', message_id => $id,
                  source_addr => $pdu->{source_addr}, source_addr_ton => $pdu->{source_addr_ton},
                  destination_addr => $pdu->{destination_addr},
                  dest_addr_ton => $pdu->{dest_addr_ton}, dest_addr_npi => $pdu->{dest_addr_npi},
                  esm_class => $pdu->{esm_class}, data_coding => $pdu->{data_coding},
                  registered_delivery => $pdu->{registered_delivery},
                  short_message => unpack('H*', $pdu->{short_message}));
            $conn->submit_sm_resp(message_id => $id, seq => $pdu->{seq});
            if ($receipts && $mode eq 'transceiver' && $pdu->{registered_delivery}) {
                $conn->deliver_sm(source_addr => $pdu->{destination_addr},
                    destination_addr => $pdu->{source_addr}, esm_class => 0x04,
                    short_message => "id:$id sub:001 dlvrd:001 submit date:2601010000 "
                                   . "done date:2601010000 stat:DELIVRD err:000 text:",
                    async => 1);
            }
        } elsif ($cmd == 0x80000005) {                    # deliver_sm_resp
            event(event => 'deliver_sm_resp', status => $pdu->{status});
        } elsif ($cmd == 0x00000015) {                    # enquire_link
            event(event => 'enquire_link');
            $conn->enquire_link_resp(seq => $pdu->{seq});
        } elsif ($cmd == 0x00000006) {                    # unbind
            event(event => 'unbind');
            $conn->unbind_resp(seq => $pdu->{seq});
            last;
        } else {
            $conn->generic_nack(seq => $pdu->{seq}, status => 0x03);
        }
    }
    $conn->close;
}
