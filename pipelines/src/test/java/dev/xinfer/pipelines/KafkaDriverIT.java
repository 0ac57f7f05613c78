package dev.xinfer.pipelines;

import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.junit.Test;

/** The launcher's Kafka driver against the broker of {@code ./xinfer cluster up kafka}. */
public class KafkaDriverIT {
  private static Set<String> topics(String servers) throws Exception {
    Properties props = new Properties();
    props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, servers);
    try (Admin admin = Admin.create(props)) {
      return admin.listTopics().names().get(20, TimeUnit.SECONDS);
    }
  }

  @Test
  public void aRunsOwnTopicsAreDeletedAndAMissingOneIsReportedNotThrown() throws Exception {
    String servers = DemoRuns.kafka();
    String run = "xinfer-driver-it-" + UUID.randomUUID().toString().substring(0, 8);
    List<String> own = List.of(run + "-in", run + "-out");
    try (KafkaDriver kafka = new KafkaDriver(servers, RecordIds.of(List.of()))) {
      kafka.createTopics(1, own.toArray(new String[0]));
      assertTrue(topics(servers).containsAll(own));

      assertNull(kafka.deleteTopics(own));
      Set<String> left = topics(servers);
      assertFalse("still there: " + left, left.contains(own.get(0)) || left.contains(own.get(1)));

      String again = kafka.deleteTopics(List.of(run + "-in"));
      assertNotNull("deleting a topic that is gone says so", again);
      assertNull(kafka.deleteTopics(List.of()));
    }
  }
}
