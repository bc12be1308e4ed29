// Readiness probe and warm-up for brokers started by scripts/kafka-local.sh.
//
// Run as a single-file source program (Java 11+), with the broker's jars on the class path:
//
//   java -cp "$LIBS/*" scripts/kafka/Warmup.java <bootstrap> <expected-brokers> <timeout-seconds>
//
// On a fresh cluster the first JoinGroup / InitProducerId answer COORDINATOR_LOAD_IN_PROGRESS
// (or NOT_COORDINATOR) until __consumer_offsets and __transaction_state exist and are loaded.
// This program does, with retries until the deadline:
//   1. describe the cluster until <expected-brokers> brokers are registered and unfenced;
//   2. create a throwaway topic (broker default replication);
//   3. join a consumer group with a KafkaConsumer and commit an offset (creates __consumer_offsets);
//   4. initTransactions() + one committed transaction (creates __transaction_state);
//   5. ask every partition of both internal topics' coordinators something (an offset fetch and a
//      transaction description for ids hashed onto each partition), so that every coordinator
//      partition has been loaded, not just the two used above;
//   6. delete the warm-up group and the throwaway topic.
// Exit 0 when all of that answered, 1 otherwise. Progress goes to stderr.

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeTransactionsResult;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsSpec;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.TransactionalIdNotFoundException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;

public class Warmup {
    private static final String GROUP = "choreograph-warmup";
    private static final String TXN_ID = "choreograph-warmup";
    private static final long ATTEMPT_MS = 30_000;

    private static String bootstrap;
    private static int expectedBrokers;
    private static long deadline;
    private static final long T0 = System.nanoTime();

    interface Step {
        void run(long budgetMs) throws Exception;
    }

    private static void log(String msg) {
        System.err.printf("warmup[%5.1fs]: %s%n", (System.nanoTime() - T0) / 1e9, msg);
    }

    private static Throwable root(Throwable t) {
        while ((t instanceof ExecutionException || t instanceof java.util.concurrent.CompletionException)
                && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    private static long remaining() {
        return deadline - System.currentTimeMillis();
    }

    /** Runs step until it succeeds or the deadline passes; each attempt gets at most ATTEMPT_MS. */
    private static void retry(String name, Step step) throws Exception {
        for (int attempt = 1; ; attempt++) {
            long left = remaining();
            if (left <= 0) {
                throw new IllegalStateException(name + ": no time left before the deadline");
            }
            try {
                step.run(Math.min(left, ATTEMPT_MS));
                log(name + ": ok" + (attempt > 1 ? " (attempt " + attempt + ")" : ""));
                return;
            } catch (Exception e) {
                Throwable cause = root(e);
                log(name + ": attempt " + attempt + " failed: " + cause);
                if (remaining() <= 500) {
                    throw new IllegalStateException(name + " did not succeed before the deadline; last error: " + cause, cause);
                }
                Thread.sleep(500);
            }
        }
    }

    private static Properties common(long budgetMs) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "choreograph-warmup");
        int requestTimeout = (int) Math.max(1_000, Math.min(budgetMs, 10_000));
        p.put("request.timeout.ms", Integer.toString(requestTimeout));
        p.put("default.api.timeout.ms", Long.toString(Math.max(requestTimeout, budgetMs)));
        p.put("retry.backoff.ms", "100");
        p.put("reconnect.backoff.ms", "100");
        p.put("reconnect.backoff.max.ms", "500");
        return p;
    }

    private static Admin admin(long budgetMs) {
        Properties p = common(budgetMs);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "choreograph-warmup-admin");
        return Admin.create(p);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: Warmup <bootstrap> <expected-brokers> <timeout-seconds>");
            System.exit(2);
        }
        bootstrap = args[0];
        expectedBrokers = Integer.parseInt(args[1]);
        deadline = System.currentTimeMillis() + Long.parseLong(args[2]) * 1000L;
        String topic = "__choreograph_warmup_" + UUID.randomUUID().toString().substring(0, 8);
        TopicPartition tp = new TopicPartition(topic, 0);

        try {
            retry("describe cluster (" + expectedBrokers + " broker(s))", budget -> {
                try (Admin admin = admin(budget)) {
                    var nodes = admin.describeCluster().nodes().get(budget, TimeUnit.MILLISECONDS);
                    if (nodes.size() < expectedBrokers) {
                        throw new IllegalStateException("only " + nodes.size() + " of " + expectedBrokers
                                + " brokers registered: " + nodes);
                    }
                }
            });

            retry("create topic " + topic, budget -> {
                try (Admin admin = admin(budget)) {
                    try {
                        admin.createTopics(List.of(new NewTopic(topic, Optional.of(1), Optional.empty())))
                                .all().get(budget, TimeUnit.MILLISECONDS);
                    } catch (ExecutionException e) {
                        if (!(root(e) instanceof TopicExistsException)) {
                            throw e;
                        }
                    }
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames()
                            .get(budget, TimeUnit.MILLISECONDS).get(topic);
                    for (TopicPartitionInfo p : d.partitions()) {
                        if (p.leader() == null || p.leader().isEmpty()) {
                            throw new IllegalStateException("partition " + p.partition() + " has no leader yet");
                        }
                    }
                }
            });

            retry("consumer group join + offset commit", budget -> {
                Properties p = common(budget);
                p.put(ConsumerConfig.GROUP_ID_CONFIG, GROUP);
                p.put(ConsumerConfig.CLIENT_ID_CONFIG, "choreograph-warmup-consumer");
                p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
                p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
                long end = System.currentTimeMillis() + budget;
                try (KafkaConsumer<byte[], byte[]> c =
                             new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
                    c.subscribe(List.of(topic));
                    while (!c.assignment().contains(tp)) {
                        if (System.currentTimeMillis() >= end) {
                            throw new IllegalStateException("no partition assigned within " + budget + " ms");
                        }
                        c.poll(Duration.ofMillis(200));
                    }
                    long left = Math.max(1_000, end - System.currentTimeMillis());
                    c.commitSync(Map.of(tp, new OffsetAndMetadata(0L)), Duration.ofMillis(left));
                }
            });

            retry("transactional producer init + commit", budget -> {
                Properties p = common(budget);
                p.put(ProducerConfig.CLIENT_ID_CONFIG, "choreograph-warmup-producer");
                p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, TXN_ID);
                p.put(ProducerConfig.ACKS_CONFIG, "all");
                p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, Long.toString(budget));
                p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG,
                        Long.toString(Math.max(budget, Integer.parseInt(p.getProperty("request.timeout.ms")) + 1000L)));
                KafkaProducer<byte[], byte[]> producer =
                        new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
                try {
                    producer.initTransactions();
                    producer.beginTransaction();
                    producer.send(new ProducerRecord<>(topic, "warmup".getBytes())).get(budget, TimeUnit.MILLISECONDS);
                    producer.commitTransaction();
                } finally {
                    producer.close(Duration.ofSeconds(5));
                }
            });

            retry("every coordinator partition answers", budget -> {
                try (Admin admin = admin(budget)) {
                    Map<String, TopicDescription> internal = admin
                            .describeTopics(List.of("__consumer_offsets", "__transaction_state"))
                            .allTopicNames().get(budget, TimeUnit.MILLISECONDS);
                    int groupPartitions = internal.get("__consumer_offsets").partitions().size();
                    int txnPartitions = internal.get("__transaction_state").partitions().size();

                    Map<String, ListConsumerGroupOffsetsSpec> groups = new HashMap<>();
                    for (String id : idsCovering("choreograph-warmup-probe-", groupPartitions)) {
                        groups.put(id, new ListConsumerGroupOffsetsSpec());
                    }
                    var offsets = admin.listConsumerGroupOffsets(groups);
                    for (String id : groups.keySet()) {
                        try {
                            offsets.partitionsToOffsetAndMetadata(id).get(budget, TimeUnit.MILLISECONDS);
                        } catch (ExecutionException e) {
                            if (!(root(e) instanceof GroupIdNotFoundException)) {
                                throw e;
                            }
                        }
                    }

                    List<String> txnIds = idsCovering("choreograph-warmup-probe-", txnPartitions);
                    DescribeTransactionsResult txns = admin.describeTransactions(txnIds);
                    for (String id : txnIds) {
                        try {
                            txns.description(id).get(budget, TimeUnit.MILLISECONDS);
                        } catch (ExecutionException e) {
                            if (!(root(e) instanceof TransactionalIdNotFoundException)) {
                                throw e;
                            }
                        }
                    }
                    log("coordinators: " + groupPartitions + " group and " + txnPartitions
                            + " transaction partitions answered");
                }
            });
        } catch (Exception e) {
            log("FAILED: " + root(e));
            cleanup(topic);
            System.exit(1);
        }
        cleanup(topic);
        log("done");
        System.exit(0);
    }

    /** Ids prefix+k such that every partition in [0, partitions) is hit at least once. */
    private static List<String> idsCovering(String prefix, int partitions) {
        List<String> ids = new ArrayList<>();
        boolean[] seen = new boolean[partitions];
        int covered = 0;
        for (int k = 0; covered < partitions; k++) {
            String id = prefix + k;
            int p = Utils.abs(id.hashCode()) % partitions;
            if (!seen[p]) {
                seen[p] = true;
                covered++;
                ids.add(id);
            }
        }
        return ids;
    }

    /** Best effort: the warm-up leaves no group and no topic behind. */
    private static void cleanup(String topic) {
        try (Admin admin = admin(10_000)) {
            try {
                admin.deleteConsumerGroups(List.of(GROUP)).all().get(10, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(root(e) instanceof GroupIdNotFoundException)) {
                    log("could not delete group " + GROUP + ": " + root(e));
                }
            }
            try {
                admin.deleteTopics(Set.of(topic)).all().get(10, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(root(e) instanceof UnknownTopicOrPartitionException)) {
                    log("could not delete topic " + topic + ": " + root(e));
                }
            }
        } catch (Exception e) {
            log("cleanup: " + root(e));
        }
    }
}
